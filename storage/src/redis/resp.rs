//! RESP2, the Redis protocol: commands encoded as arrays of bulk strings, replies parsed
//! incrementally from a receive buffer (a reply split across reads is "not yet complete",
//! never an error).

/// Appends the header of a command of `args` arguments; each argument follows as
/// [`put_arg`].
pub fn put_command(out: &mut Vec<u8>, args: usize) {
    out.push(b'*');
    put_decimal(out, args as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends one argument (a bulk string).
pub fn put_arg(out: &mut Vec<u8>, arg: &[u8]) {
    put_arg_header(out, arg.len());
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

/// Appends one argument made of `parts` concatenated.
pub fn put_arg_parts(out: &mut Vec<u8>, parts: &[&[u8]]) {
    put_arg_header(out, parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends an integer argument in decimal.
pub fn put_arg_u64(out: &mut Vec<u8>, v: u64) {
    let mut digits = [0u8; 20];
    let n = decimal(&mut digits, v);
    put_arg(out, digits.get(20 - n..).unwrap_or_default());
}

fn put_arg_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'$');
    put_decimal(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

fn put_decimal(out: &mut Vec<u8>, v: u64) {
    let mut digits = [0u8; 20];
    let n = decimal(&mut digits, v);
    out.extend_from_slice(digits.get(20 - n..).unwrap_or_default());
}

/// Writes `v` right-aligned into `digits`; returns how many digits.
fn decimal(digits: &mut [u8; 20], mut v: u64) -> usize {
    let mut n = 0;
    loop {
        n += 1;
        if let Some(d) = digits.get_mut(20 - n) {
            *d = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 {
            return n;
        }
    }
}

/// A whole command, for the blocking loader and tests.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    put_command(&mut out, args.len());
    for a in args {
        put_arg(&mut out, a);
    }
    out
}

/// One reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and other simple strings.
    Status(String),
    /// `-ERR ...`: the command failed.
    Error(String),
    /// `:n`.
    Int(i64),
    /// `$n` (None: the null bulk string).
    Bulk(Option<Vec<u8>>),
    /// `*n` (None: the null array).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The first error in this reply (nested ones included).
    pub fn error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            Reply::Array(Some(items)) => items.iter().find_map(Reply::error),
            _ => None,
        }
    }
}

/// The protocol was broken (not a reply Redis sends).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Redis reply: {0}")]
pub struct Malformed(pub &'static str);

/// Deepest array nesting and longest bulk string accepted (Redis's own `proto-max-bulk-len`
/// default is 512 MB; replies here are far smaller).
const DEPTH_MAX: usize = 8;
const BULK_MAX: usize = 512 << 20;

/// Parses one reply from the start of `buf`: `Ok(None)` if it is not complete yet, else the
/// reply and the bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, Malformed> {
    parse_at(buf, 0)
}

/// Only checks that one complete reply starts `buf` and says whether it is an error: the
/// write path's replies are counted, not kept. `Ok(None)`: incomplete.
pub fn skip(buf: &[u8]) -> Result<Option<(bool, usize)>, Malformed> {
    // Single-line replies (what writes get) without building anything.
    match buf.first() {
        Some(b':') | Some(b'+') => return Ok(line(buf, 1)?.map(|(_, n)| (false, n))),
        None => return Ok(None),
        _ => {}
    }
    Ok(parse(buf)?.map(|(r, n)| (r.error().is_some(), n)))
}

fn line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, Malformed> {
    let rest = buf.get(from..).unwrap_or_default();
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some((rest.get(..i).unwrap_or_default(), from + i + 2))),
        None if rest.len() > 64 << 10 => Err(Malformed("line without CRLF")),
        None => Ok(None),
    }
}

fn int(text: &[u8]) -> Result<i64, Malformed> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Malformed("bad integer"))
}

fn parse_at(buf: &[u8], depth: usize) -> Result<Option<(Reply, usize)>, Malformed> {
    if depth > DEPTH_MAX {
        return Err(Malformed("arrays nested too deep"));
    }
    let Some(kind) = buf.first() else {
        return Ok(None);
    };
    let Some((text, mut at)) = line(buf, 1)? else {
        return Ok(None);
    };
    let reply = match kind {
        b'+' => Reply::Status(String::from_utf8_lossy(text).into_owned()),
        b'-' => Reply::Error(String::from_utf8_lossy(text).into_owned()),
        b':' => Reply::Int(int(text)?),
        b'$' => {
            let n = int(text)?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let n = usize::try_from(n).map_err(|_| Malformed("bad length"))?;
                if n > BULK_MAX {
                    return Err(Malformed("bulk string too long"));
                }
                let Some(bytes) = buf.get(at..at + n) else {
                    return Ok(None);
                };
                match buf.get(at + n..at + n + 2) {
                    None | Some([b'\r']) => return Ok(None),
                    Some(b"\r\n") => {}
                    Some(_) => return Err(Malformed("bulk string without CRLF")),
                }
                let bytes = bytes.to_vec();
                at += n + 2;
                Reply::Bulk(Some(bytes))
            }
        }
        b'*' => {
            let n = int(text)?;
            if n < 0 {
                Reply::Array(None)
            } else {
                let n = usize::try_from(n).map_err(|_| Malformed("bad length"))?;
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let Some((item, used)) =
                        parse_at(buf.get(at..).unwrap_or_default(), depth + 1)?
                    else {
                        return Ok(None);
                    };
                    items.push(item);
                    at += used;
                }
                Reply::Array(Some(items))
            }
        }
        _ => return Err(Malformed("unknown reply type")),
    };
    Ok(Some((reply, at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_encode_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        put_command(&mut out, 3);
        put_arg(&mut out, b"HSET");
        put_arg_parts(&mut out, &[b"k", b"ey"]);
        put_arg_u64(&mut out, 1234);
        assert_eq!(out, b"*3\r\n$4\r\nHSET\r\n$3\r\nkey\r\n$4\r\n1234\r\n");
        assert_eq!(command(&[b"PING"]), b"*1\r\n$4\r\nPING\r\n");
        let mut zero = Vec::new();
        put_arg_u64(&mut zero, 0);
        assert_eq!(zero, b"$1\r\n0\r\n");
    }

    #[test]
    fn every_reply_kind_parses_and_every_prefix_is_incomplete() {
        let wire: &[u8] =
            b"*5\r\n+OK\r\n-ERR no\r\n:-7\r\n$3\r\na\r\n\r\n*2\r\n$-1\r\n*-1\r\n:1\r\n";
        let (reply, used) = parse(wire).unwrap().unwrap();
        assert_eq!(used, wire.len() - 4);
        assert_eq!(
            reply,
            Reply::Array(Some(vec![
                Reply::Status("OK".into()),
                Reply::Error("ERR no".into()),
                Reply::Int(-7),
                Reply::Bulk(Some(b"a\r\n".to_vec())),
                Reply::Array(Some(vec![Reply::Bulk(None), Reply::Array(None)])),
            ]))
        );
        assert_eq!(reply.error(), Some("ERR no"));
        for cut in 0..used {
            assert_eq!(parse(&wire[..cut]).unwrap(), None, "prefix {cut}");
        }
        assert_eq!(skip(b":1\r\n+OK\r\n").unwrap(), Some((false, 4)));
        assert_eq!(skip(b"-OOM x\r\n").unwrap(), Some((true, 8)));
        assert_eq!(skip(b":12").unwrap(), None);
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for bad in [&b"?x\r\n"[..], b":x\r\n", b"$3\r\nabcde", b"*1\r\n!\r\n"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = b"*1\r\n".repeat(20);
        assert!(parse(&deep).is_err());
    }
}
