//! The systems `hyperion-bench` can drive besides Hyperion, so `ci/compare` measures them all with
//! one load loop (the same concurrency, the same HDR histograms, the same key and value bytes):
//!
//! - `echo`: the tonic echo server of [`crate::echo`], Hyperion's own client and protocol with no
//!   cache behind them (the transport's ceiling);
//! - `etcd`: etcd's v3 KV API over gRPC (tonic with the two messages it needs, below);
//! - `redis`: RESP2 over TCP (`GET`, `SET`, `MGET`), one connection per worker;
//! - `memcached`: memcached's text protocol (`get`, `set`, multi-key `get`), one connection per
//!   worker.
//!
//! Each answers the three operations the bench sends: a read of one key (hit or miss), a write, and
//! a read of many keys (the number found).

/// What the bench drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// A Hyperion node or cluster (and the echo server, which speaks its protocol).
    Hyperion,
    /// etcd 3 (`--addr` its client URL's host:port); reads are linearizable unless `--allow-stale`
    /// (etcd's serializable range).
    Etcd,
    /// Redis (RESP2, no AUTH).
    Redis,
    /// memcached (text protocol).
    Memcached,
}

impl Target {
    /// Whether every worker needs a connection of its own (one request in flight per connection).
    pub fn connection_per_worker(self) -> bool {
        matches!(self, Target::Redis | Target::Memcached)
    }
}

use std::time::Duration;

use hyperion::runtime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tonic::{Code, Status};

/// Bytes of one answer the bench accepts from Redis or memcached (a bound on what a broken or
/// hostile server can make it allocate).
const ANSWER_BYTES_MAX: usize = 64 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn io_error(what: &str, error: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("{what}: {error}"))
}

fn protocol_error(what: &str) -> Status {
    Status::internal(format!("unexpected answer: {what}"))
}

async fn timed<T>(
    future: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    runtime::timeout(CALL_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer within 10 s")))
}

/// A line-oriented TCP connection (RESP and memcached's text protocol both are).
struct Conn {
    stream: BufReader<TcpStream>,
    line: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> Result<Conn, Status> {
        let stream = runtime::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| io_error(addr, "no connection within 5 s"))?
            .map_err(|e| io_error(addr, e))?;
        stream.set_nodelay(true).map_err(|e| io_error(addr, e))?;
        Ok(Conn {
            stream: BufReader::new(stream),
            line: Vec::new(),
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), Status> {
        self.stream
            .get_mut()
            .write_all(bytes)
            .await
            .map_err(|e| io_error("write", e))
    }

    /// The next line, without its `\r\n`.
    async fn line(&mut self) -> Result<&[u8], Status> {
        self.line.clear();
        let read = (&mut self.stream)
            .take(ANSWER_BYTES_MAX as u64)
            .read_until(b'\n', &mut self.line)
            .await
            .map_err(|e| io_error("read", e))?;
        if read == 0 || !self.line.ends_with(b"\r\n") {
            return Err(io_error("read", "the connection closed mid-answer"));
        }
        self.line.truncate(self.line.len() - 2);
        Ok(&self.line)
    }

    /// Skips `len` bytes of data and their `\r\n`.
    async fn skip(&mut self, len: usize) -> Result<(), Status> {
        if len > ANSWER_BYTES_MAX {
            return Err(protocol_error("a value larger than 64 MiB"));
        }
        let mut left = len + 2;
        let mut buffer = [0u8; 8192];
        while left > 0 {
            let chunk = left.min(buffer.len());
            self.stream
                .read_exact(&mut buffer[..chunk])
                .await
                .map_err(|e| io_error("read", e))?;
            left -= chunk;
        }
        Ok(())
    }
}

fn parse_len(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// One Redis connection (RESP2).
pub struct Redis(Conn);

impl Redis {
    pub async fn connect(addr: &str) -> Result<Redis, Status> {
        Ok(Redis(Conn::open(addr).await?))
    }

    fn command(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", parts.len()).into_bytes();
        for part in parts {
            out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Reads one bulk string; whether it was present.
    async fn bulk(&mut self) -> Result<bool, Status> {
        let line = self.0.line().await?;
        match line.first() {
            Some(b'$') => match parse_len(&line[1..]) {
                Some(-1) => Ok(false),
                Some(len) if len >= 0 => {
                    self.0.skip(len as usize).await?;
                    Ok(true)
                }
                _ => Err(protocol_error("a bulk string's length")),
            },
            Some(b'-') => Err(Status::unknown(String::from_utf8_lossy(line).into_owned())),
            _ => Err(protocol_error("not a bulk string")),
        }
    }

    pub async fn get(&mut self, key: &[u8]) -> Result<bool, Status> {
        timed(async {
            self.0.send(&Self::command(&[b"GET", key])).await?;
            self.bulk().await
        })
        .await
    }

    pub async fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), Status> {
        timed(async {
            self.0.send(&Self::command(&[b"SET", key, value])).await?;
            match self.0.line().await? {
                b"+OK" => Ok(()),
                other => Err(Status::unknown(String::from_utf8_lossy(other).into_owned())),
            }
        })
        .await
    }

    /// `MGET`: how many of `keys` were present.
    pub async fn mget(&mut self, keys: &[Vec<u8>]) -> Result<u64, Status> {
        timed(async {
            let mut parts: Vec<&[u8]> = vec![b"MGET"];
            parts.extend(keys.iter().map(Vec::as_slice));
            self.0.send(&Self::command(&parts)).await?;
            let line = self.0.line().await?;
            let count = match (line.first(), parse_len(line.get(1..).unwrap_or_default())) {
                (Some(b'*'), Some(count)) if count as usize == keys.len() => count,
                _ => return Err(protocol_error("MGET's array")),
            };
            let mut found = 0;
            for _ in 0..count {
                found += u64::from(self.bulk().await?);
            }
            Ok(found)
        })
        .await
    }
}

/// One memcached connection (text protocol).
pub struct Memcached(Conn);

impl Memcached {
    pub async fn connect(addr: &str) -> Result<Memcached, Status> {
        Ok(Memcached(Conn::open(addr).await?))
    }

    /// Sends `get k1 k2 ...` and counts the `VALUE` blocks up to `END`.
    async fn get_many(&mut self, keys: &[&[u8]]) -> Result<u64, Status> {
        let mut command = b"get".to_vec();
        for key in keys {
            command.push(b' ');
            command.extend_from_slice(key);
        }
        command.extend_from_slice(b"\r\n");
        self.0.send(&command).await?;
        let mut found = 0;
        loop {
            let line = self.0.line().await?;
            if line == b"END" {
                return Ok(found);
            }
            // VALUE <key> <flags> <bytes>
            let len = match line.strip_prefix(b"VALUE ") {
                Some(rest) => rest.rsplit(|b| *b == b' ').next().and_then(parse_len),
                None => {
                    return Err(Status::unknown(String::from_utf8_lossy(line).into_owned()));
                }
            };
            match len {
                Some(len) if len >= 0 => self.0.skip(len as usize).await?,
                _ => return Err(protocol_error("a VALUE line's length")),
            }
            found += 1;
        }
    }

    pub async fn get(&mut self, key: &[u8]) -> Result<bool, Status> {
        timed(async { Ok(self.get_many(&[key]).await? == 1) }).await
    }

    pub async fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), Status> {
        timed(async {
            let mut command = b"set ".to_vec();
            command.extend_from_slice(key);
            command.extend_from_slice(format!(" 0 0 {}\r\n", value.len()).as_bytes());
            command.extend_from_slice(value);
            command.extend_from_slice(b"\r\n");
            self.0.send(&command).await?;
            match self.0.line().await? {
                b"STORED" => Ok(()),
                other => Err(Status::unknown(String::from_utf8_lossy(other).into_owned())),
            }
        })
        .await
    }

    pub async fn get_multi(&mut self, keys: &[Vec<u8>]) -> Result<u64, Status> {
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        timed(self.get_many(&keys)).await
    }
}

/// etcd's v3 API, the two calls the bench makes (`etcdserverpb.KV/Range` and `/Put`), with the
/// fields it sets; field numbers as in etcd's `rpc.proto`.
mod etcd_proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub range_end: Vec<u8>,
        #[prost(bool, tag = "7")]
        pub serializable: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "5")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeResponse {
        #[prost(message, repeated, tag = "2")]
        pub kvs: Vec<KeyValue>,
        #[prost(int64, tag = "4")]
        pub count: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {}
}

/// An etcd client over one HTTP/2 connection (tonic multiplexes the workers' calls on it, as
/// Hyperion's client does).
#[derive(Clone)]
pub struct Etcd {
    channel: tonic::transport::Channel,
    serializable: bool,
}

impl Etcd {
    pub async fn connect(addr: &str, serializable: bool) -> Result<Etcd, Status> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::invalid_argument(format!("--addr: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| io_error(addr, e))?;
        Ok(Etcd {
            channel,
            serializable,
        })
    }

    async fn unary<Q, A>(&self, path: &'static str, message: Q) -> Result<A, Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::new(Code::Unavailable, e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Q, A>::default();
        let path = http::uri::PathAndQuery::from_static(path);
        Ok(grpc
            .unary(tonic::Request::new(message), path, codec)
            .await?
            .into_inner())
    }

    pub async fn get(&self, key: &[u8]) -> Result<bool, Status> {
        let request = etcd_proto::RangeRequest {
            key: key.to_vec(),
            range_end: Vec::new(),
            serializable: self.serializable,
        };
        let answer: etcd_proto::RangeResponse =
            self.unary("/etcdserverpb.KV/Range", request).await?;
        Ok(!answer.kvs.is_empty())
    }

    pub async fn set(&self, key: &[u8], value: &[u8]) -> Result<(), Status> {
        let request = etcd_proto::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        let _: etcd_proto::PutResponse = self.unary("/etcdserverpb.KV/Put", request).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_command_is_an_array_of_bulk_strings() {
        assert_eq!(
            Redis::command(&[b"SET", b"k", b"v1"]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n"
        );
    }

    #[test]
    fn lengths_parse_or_refuse() {
        assert_eq!(parse_len(b"100"), Some(100));
        assert_eq!(parse_len(b"-1"), Some(-1));
        assert_eq!(parse_len(b"1x"), None);
    }
}
