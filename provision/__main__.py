from hark_fleet.provision.cli import main

raise SystemExit(main())
