import sys

if sys.argv[1:2] == ["ops"]:
    from bench.ops import main as ops_main

    raise SystemExit(ops_main(sys.argv[2:]))

from bench.run import main

raise SystemExit(main())
