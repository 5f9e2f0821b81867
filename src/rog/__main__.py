from rog.cli import main

raise SystemExit(main())
