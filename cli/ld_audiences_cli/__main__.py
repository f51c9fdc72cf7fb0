from ld_audiences_cli.main import main

raise SystemExit(main())
