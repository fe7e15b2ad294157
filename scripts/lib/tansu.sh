# The tansu Kafka-compatible broker (crates.io, Apache-2.0) for tests/kafka.rs's real-broker
# test. Sourced by scripts/test, not run. Installs it once into target/tools/tansu (a debug
# build: about 20 minutes on a 2-core machine, a release build takes much longer) and reuses it
# afterwards; exports its path as RECWATCH_TANSU. An already set RECWATCH_TANSU that names an
# executable is used as it is.

TANSU_VERSION=0.6.0

ensure_tansu() {
    if [ -n "${RECWATCH_TANSU:-}" ] && [ -x "$RECWATCH_TANSU" ]; then
        export RECWATCH_TANSU
        return 0
    fi
    local root="$PWD/target/tools/tansu"
    if [ ! -x "$root/bin/tansu" ]; then
        echo "== installing tansu $TANSU_VERSION into $root (once; a debug build takes about 20 minutes)"
        # --features dynostore: the default build has no storage engine (memory:// comes with it).
        cargo install tansu --version "$TANSU_VERSION" --features dynostore --debug --locked --root "$root"
    fi
    RECWATCH_TANSU="$root/bin/tansu"
    export RECWATCH_TANSU
}
