from hark_fleet.node.cli import main

raise SystemExit(main())
