//! The seed protocol, and the one command that replays a run.
//!
//! Contract: one seed is one run, wherever scenarios run. A seed is chosen on the command line
//! (`--seed N`, or `--seeds A..B` for several) or, where there is no command line (the
//! `scenario_tests` layer), by the environment: `HYPERION_SIM_SEED=N` is the first seed and
//! `HYPERION_SIM_SEEDS=K` how many (K seeds from N; without `HYPERION_SIM_SEED` they start at 1,
//! without `HYPERION_SIM_SEEDS` it is one seed). The command line wins over the environment.
//! `MADSIM_TEST_SEED` is madsim's own and seeds only the plain `#[madsim::test]` unit tests.
//!
//! Every failure prints one line that replays it, built by [`reproduce`] and nowhere else.

use std::fmt;

/// The first seed to run (or the only one).
pub const SEED_VAR: &str = "HYPERION_SIM_SEED";
/// How many seeds to run, from [`SEED_VAR`] (default 1).
pub const SEEDS_VAR: &str = "HYPERION_SIM_SEEDS";
/// Most seeds one selection may list (bounds a sweep's run time and its item list).
pub const SEEDS_MAX: usize = 100_000;

/// The seeds the environment asks for, or `None` when it names none.
pub fn from_env() -> Result<Option<Vec<u64>>, String> {
    let var = |name| std::env::var(name).ok();
    from_values(var(SEED_VAR).as_deref(), var(SEEDS_VAR).as_deref())
}

/// The seeds `HYPERION_SIM_SEED = first` and `HYPERION_SIM_SEEDS = count` ask for (unset or
/// empty: `None`).
pub fn from_values(first: Option<&str>, count: Option<&str>) -> Result<Option<Vec<u64>>, String> {
    let number = |name: &str, value: Option<&str>| -> Result<Option<u64>, String> {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{name} must be a non-negative integer, got `{v}`")),
        }
    };
    let first = number(SEED_VAR, first)?;
    let count = number(SEEDS_VAR, count)?;
    if first.is_none() && count.is_none() {
        return Ok(None);
    }
    let first = first.unwrap_or(1);
    let count = count.unwrap_or(1);
    if count == 0 || count > SEEDS_MAX as u64 {
        return Err(format!("{SEEDS_VAR} must be 1..={SEEDS_MAX}, got {count}"));
    }
    let end = first
        .checked_add(count)
        .ok_or_else(|| format!("{SEED_VAR} + {SEEDS_VAR} overflows"))?;
    Ok(Some((first..end).collect()))
}

/// The seeds to run: the command line's if it names any, else the environment's, else
/// `default`.
pub fn select(command_line: Option<Vec<u64>>, default: &[u64]) -> Result<Vec<u64>, String> {
    match command_line {
        Some(seeds) => Ok(seeds),
        None => Ok(from_env()?.unwrap_or_else(|| default.to_vec())),
    }
}

/// Parses `"A..B"` (B excluded), `"A..=B"`, one seed `"N"`, or a list `"3,7,9"`.
pub fn parse(text: &str) -> Result<Vec<u64>, String> {
    let bad =
        || format!("`{text}` is not a seed range (`A..B`, end excluded, `A..=B`, `N` or `N,M,..`)");
    if text.contains(',') {
        let seeds = text
            .split(',')
            .map(|seed| seed.trim().parse().map_err(|_| bad()))
            .collect::<Result<Vec<u64>, _>>()?;
        if seeds.len() > SEEDS_MAX {
            return Err(format!("`{text}` lists more than {SEEDS_MAX} seeds"));
        }
        return Ok(seeds);
    }
    let (start, end, inclusive) = if let Some((a, b)) = text.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = text.split_once("..") {
        (a, b, false)
    } else {
        return text
            .trim()
            .parse()
            .map(|seed| vec![seed])
            .map_err(|_| bad());
    };
    let start: u64 = start.trim().parse().map_err(|_| bad())?;
    let end: u64 = end.trim().parse().map_err(|_| bad())?;
    let end = if inclusive {
        end.saturating_add(1)
    } else {
        end
    };
    if end <= start {
        return Err(format!("seed range `{text}` is empty"));
    }
    if end - start > SEEDS_MAX as u64 {
        return Err(format!(
            "seed range `{text}` has more than {SEEDS_MAX} seeds"
        ));
    }
    Ok((start..end).collect())
}

/// Seeds as [`parse`] reads them back: `N`, `A..B` when consecutive, else `N,M,..`.
pub fn show(seeds: &[u64]) -> String {
    match seeds {
        [] => String::new(),
        [seed] => seed.to_string(),
        [first, .., last] if seeds.windows(2).all(|w| w[1] == w[0] + 1) => {
            format!("{first}..{}", last + 1)
        }
        _ => seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// What a replay does with the seeds it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay<'a> {
    /// Runs them: one seed with its full report, several as a sweep.
    Run(&'a [u64]),
    /// Runs each twice and compares the traces.
    Determinism(&'a [u64]),
}

/// A command that replays something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reproduce(String);

impl fmt::Display for Reproduce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reproduce: {}", self.0)
    }
}

impl Reproduce {
    /// The command alone (without `reproduce: `).
    pub fn command(&self) -> &str {
        &self.0
    }
}

/// The one command that replays `replay` of `file` (a regression's `variant`).
pub fn reproduce(file: &str, variant: Option<&str>, replay: Replay<'_>) -> Reproduce {
    let mut command = match replay {
        Replay::Run([seed]) => format!("ci/sim run {file} --seed {seed}"),
        Replay::Run(seeds) => format!("ci/sim sweep {file} --seeds {}", show(seeds)),
        Replay::Determinism(seeds) => {
            format!("ci/sim check-determinism {file} --seeds {}", show(seeds))
        }
    };
    if let Some(variant) = variant {
        command.push_str(&format!(" --variant {variant}"));
    }
    Reproduce(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_names_the_first_seed_and_how_many() {
        assert_eq!(from_values(None, None).unwrap(), None);
        assert_eq!(from_values(Some("1042"), None).unwrap(), Some(vec![1042]));
        assert_eq!(from_values(None, Some("3")).unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(from_values(Some("7"), Some("2")).unwrap(), Some(vec![7, 8]));
        assert_eq!(
            from_values(Some(" "), Some("")).unwrap(),
            None,
            "empty is unset"
        );
        assert!(from_values(Some("x"), None).unwrap_err().contains(SEED_VAR));
        assert!(from_values(None, Some("0"))
            .unwrap_err()
            .contains(SEEDS_VAR));
        assert_eq!(select(Some(vec![5]), &[1]).unwrap(), vec![5], "--seed wins");
    }

    #[test]
    fn seed_lists_read_back_as_written() {
        for seeds in [vec![7], vec![1, 2, 3], vec![18, 19], vec![3, 7, 9]] {
            assert_eq!(parse(&show(&seeds)).unwrap(), seeds);
        }
        assert_eq!(show(&[1, 2, 3]), "1..4");
        assert_eq!(show(&[3, 7]), "3,7");
    }

    #[test]
    fn one_builder_names_every_replay() {
        assert_eq!(
            reproduce("scenarios/x.toml", None, Replay::Run(&[7])).to_string(),
            "reproduce: ci/sim run scenarios/x.toml --seed 7"
        );
        assert_eq!(
            reproduce("r.toml", Some("before-fix"), Replay::Run(&[1, 2, 3])).command(),
            "ci/sim sweep r.toml --seeds 1..4 --variant before-fix"
        );
        assert_eq!(
            reproduce("r.toml", None, Replay::Determinism(&[5])).command(),
            "ci/sim check-determinism r.toml --seeds 5"
        );
    }
}
