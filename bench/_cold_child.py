"""Child of the cold-init benchmark: import one handler module by path, as Lambda's runtime does, and
report how long it took. Run as a script (`python bench/_cold_child.py NAME PATH`), never imported:
nothing but the interpreter's own start-up modules is loaded before the clock starts."""

import importlib.util
import sys
import time


def main() -> None:
    name, path = sys.argv[1], sys.argv[2]
    sys.stderr.write("#bench-import-start\n")
    sys.stderr.flush()
    started, cpu_started = time.perf_counter(), time.process_time()
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    sys.stderr.write("#bench-import-end\n")
    core = sys.modules.get("ld_audiences")
    core_file = getattr(core, "__file__", "") or ""
    handler = "lambda_handler" in vars(module)
    core_file = core_file.replace("\\", "/").replace('"', "")
    sys.stdout.write(
        f'{{"import_ms": {elapsed * 1000:.3f}, "cpu_ms": {cpu * 1000:.3f}, "modules": {len(sys.modules)}, '
        f'"core": "{core_file}", "handler": {"true" if handler else "false"}}}\n'
    )


if __name__ == "__main__":
    main()
