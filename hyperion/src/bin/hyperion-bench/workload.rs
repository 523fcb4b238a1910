//! What a benchmark run sends: the operation mix, the key chooser (uniform, or YCSB's scrambled
//! zipfian) and the keys' bytes. Everything is drawn from one seeded RNG per worker, so a run's
//! sequence of operations is reproducible.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The operation mixes (YCSB's core workloads A, B and C, plus single-operation runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mix {
    /// Gets only (hits, plus `--miss-percent` misses).
    Get,
    /// Sets only.
    Set,
    /// YCSB A: 50 % reads, 50 % updates.
    YcsbA,
    /// YCSB B: 95 % reads, 5 % updates.
    YcsbB,
    /// YCSB C: reads only.
    YcsbC,
    /// BatchGets of `--batch-size` keys.
    BatchGet,
}

impl Mix {
    /// Percentage of operations that write.
    fn write_percent(self) -> u32 {
        match self {
            Mix::Set => 100,
            Mix::YcsbA => 50,
            Mix::YcsbB => 5,
            Mix::Get | Mix::YcsbC | Mix::BatchGet => 0,
        }
    }

    /// Whether the run needs the key space written first.
    pub fn reads(self) -> bool {
        self != Mix::Set
    }
}

/// How keys are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    Uniform,
    /// YCSB's scrambled zipfian (`--zipf-theta`, default 0.99): a few keys are hot, and which
    /// ones is spread over the key space.
    Zipfian,
}

/// One operation to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A Get of key `id`; `absent` keys were never written (a miss).
    Get {
        id: u64,
        absent: bool,
    },
    Set {
        id: u64,
    },
    BatchGet {
        ids: Vec<u64>,
    },
}

/// The bytes of key `id` (`absent`: a key outside the written space).
pub fn key(id: u64, absent: bool) -> Vec<u8> {
    if absent {
        format!("bench-absent:{id:012}").into_bytes()
    } else {
        format!("bench:{id:012}").into_bytes()
    }
}

/// YCSB's zipfian generator over `0..n` (Gray et al., "Quickly generating billion-record
/// synthetic databases"), with the items scrambled by a hash so the hot keys are not adjacent.
#[derive(Clone, Debug)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

impl Zipfian {
    pub fn new(n: u64, theta: f64) -> Zipfian {
        assert!(
            n >= 1 && theta > 0.0 && theta < 1.0,
            "zipfian needs n >= 1, 0 < theta < 1"
        );
        let zeta = |count: u64| {
            (1..=count)
                .map(|i| 1.0 / (i as f64).powf(theta))
                .sum::<f64>()
        };
        let zeta_n = zeta(n);
        let zeta_2 = zeta(2.min(n));
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n);
        Zipfian {
            n,
            theta,
            alpha,
            zeta_n,
            eta,
        }
    }

    /// The rank drawn (0 is the hottest).
    fn rank(&self, rng: &mut ChaCha8Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let rank = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.n - 1)
    }

    /// A key id: the drawn rank, scrambled over `0..n`.
    pub fn draw(&self, rng: &mut ChaCha8Rng) -> u64 {
        fnv1a(self.rank(rng)) % self.n
    }
}

fn fnv1a(value: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in value.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Draws the operations of one worker.
pub struct Generator {
    mix: Mix,
    keys: u64,
    zipfian: Option<Zipfian>,
    miss_percent: u32,
    batch_size: usize,
    rng: ChaCha8Rng,
}

impl Generator {
    pub fn new(
        mix: Mix,
        keys: u64,
        zipfian: Option<Zipfian>,
        miss_percent: u32,
        batch_size: usize,
        rng: ChaCha8Rng,
    ) -> Generator {
        Generator {
            mix,
            keys,
            zipfian,
            miss_percent,
            batch_size,
            rng,
        }
    }

    fn id(&mut self) -> u64 {
        match &self.zipfian {
            Some(zipfian) => zipfian.draw(&mut self.rng),
            None => self.rng.random_range(0..self.keys),
        }
    }

    pub fn next_op(&mut self) -> Op {
        if self.mix == Mix::BatchGet {
            let ids = (0..self.batch_size).map(|_| self.id()).collect();
            return Op::BatchGet { ids };
        }
        if self.rng.random_range(0..100) < self.mix.write_percent() {
            return Op::Set { id: self.id() };
        }
        let absent = self.rng.random_range(0..100) < self.miss_percent;
        Op::Get {
            id: self.id(),
            absent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn zipfian_is_skewed_and_stays_in_range() {
        let zipf = Zipfian::new(10_000, 0.99);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut counts = std::collections::BTreeMap::<u64, u64>::new();
        for _ in 0..100_000 {
            let id = zipf.draw(&mut rng);
            assert!(id < 10_000);
            *counts.entry(id).or_default() += 1;
        }
        let mut sorted: Vec<u64> = counts.values().copied().collect();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let top_1_percent: u64 = sorted.iter().take(100).sum();
        // Under theta 0.99 the hottest 1 % of 10,000 keys draw roughly half the requests; a
        // uniform chooser would give them 1 %.
        assert!(
            top_1_percent > 30_000,
            "top 1 % drew {top_1_percent} of 100,000"
        );
    }

    #[test]
    fn mixes_write_their_share() {
        let mut generator =
            Generator::new(Mix::YcsbB, 100, None, 0, 1, ChaCha8Rng::seed_from_u64(1));
        let writes = (0..10_000)
            .filter(|_| matches!(generator.next_op(), Op::Set { .. }))
            .count();
        assert!(
            (350..650).contains(&writes),
            "{writes} writes of 10,000 in YCSB B"
        );
        let mut batches = Generator::new(
            Mix::BatchGet,
            100,
            None,
            0,
            16,
            ChaCha8Rng::seed_from_u64(1),
        );
        assert!(matches!(batches.next_op(), Op::BatchGet { ids } if ids.len() == 16));
    }
}
