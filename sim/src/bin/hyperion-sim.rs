//! `hyperion-sim`: the simulator's command line (see `hyperion_sim::cli`). It only exists in the
//! madsim build; build and run it through `ci/sim run|sweep|replay|check-determinism`.

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    hyperion_sim::cli::main()
}

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "hyperion-sim needs the madsim build: run it through ci/sim \
         (e.g. `ci/sim run scenarios/leader-isolation.toml --seed 1`)"
    );
    std::process::ExitCode::from(2)
}
