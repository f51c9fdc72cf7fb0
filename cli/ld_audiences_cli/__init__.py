"""`ld-audiences`: the operator CLI of a deployed stack (status, resync, retire, audit, redrive, check, replay).

It needs only the project's base install; the local stack's commands (`local`, `demo`, `emulator`) live in
ld_audiences_local, come with the `local` extra and are imported only when run (main.py).
"""
