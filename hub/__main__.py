from hark_fleet.hub.cli import main

raise SystemExit(main())
