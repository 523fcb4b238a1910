//! Running a simulation over many seeds, each in a fresh madsim runtime, with a one-line
//! reproduction command for any seed that fails.
//!
//! Seeds: `HYPERION_SIM_SEED=N` runs exactly seed N; otherwise `HYPERION_SIM_SEEDS=COUNT`
//! (default per test) seeds starting at `HYPERION_SIM_SEED_START` (default 1).

use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::Duration;

/// Simulated-time limit of one seed: a run that has not finished by then is a liveness failure.
pub const SEED_TIME_LIMIT: Duration = Duration::from_secs(600);

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got `{value}`")),
    )
}

/// The seeds a sweep runs.
pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("HYPERION_SIM_SEED") {
        return vec![seed];
    }
    let count = env_u64("HYPERION_SIM_SEEDS").unwrap_or(default_count);
    let start = env_u64("HYPERION_SIM_SEED_START").unwrap_or(1);
    (start..start + count).collect()
}

/// The command that replays `seed` of the test named `test`.
pub fn repro_command(test: &str, seed: u64) -> String {
    format!("HYPERION_SIM_SEED={seed} ci/sim test {test} -- --exact --nocapture")
}

/// Runs one seed of `scenario` in its own runtime; `Err` carries the failure text.
pub fn run_seed<F, Fut>(seed: u64, scenario: &F) -> Result<(), String>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut runtime =
        madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.set_time_limit(SEED_TIME_LIMIT);
    match catch_unwind(AssertUnwindSafe(|| runtime.block_on(scenario(seed)))) {
        Ok(result) => result,
        Err(panic) => Err(format!("panicked: {}", panic_text(panic.as_ref()))),
    }
}

/// The message of a caught panic.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".to_string())
}

/// Runs `scenario` for every seed of [`seeds`]; on the first failure prints the seed and the
/// command that replays it, then fails the test.
pub fn sweep<F, Fut>(test: &str, default_count: u64, scenario: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    for seed in seeds(default_count) {
        if let Err(failure) = run_seed(seed, &scenario) {
            eprintln!(
                "\nFAILED {test} seed {seed}:\n{failure}\nreproduce: {}\n",
                repro_command(test, seed)
            );
            resume_unwind(Box::new(format!("{test} failed at seed {seed}")));
        }
    }
}
