//! Client messages the audit reads. Each decoder borrows from the message body and checks
//! every length, so malformed input is a [`ProtocolError`].

use super::{ProtocolError, Reader};

pub const QUERY: u8 = b'Q';
pub const PARSE: u8 = b'P';
pub const BIND: u8 = b'B';
pub const EXECUTE: u8 = b'E';
pub const CLOSE: u8 = b'C';
pub const DESCRIBE: u8 = b'D';
pub const SYNC: u8 = b'S';
pub const FLUSH: u8 = b'H';
pub const TERMINATE: u8 = b'X';
pub const FUNCTION_CALL: u8 = b'F';
pub const COPY_DATA: u8 = b'd';
pub const COPY_DONE: u8 = b'c';
pub const COPY_FAIL: u8 = b'f';
pub const PASSWORD: u8 = b'p';

/// Whether `tag` is a message a client may send after start-up.
pub fn is_known(tag: u8) -> bool {
    matches!(
        tag,
        QUERY
            | PARSE
            | BIND
            | EXECUTE
            | CLOSE
            | DESCRIBE
            | SYNC
            | FLUSH
            | TERMINATE
            | FUNCTION_CALL
            | COPY_DATA
            | COPY_DONE
            | COPY_FAIL
    )
}

/// Simple-protocol query: one string, possibly several statements.
pub fn query(body: &[u8]) -> Result<&str, ProtocolError> {
    let mut r = Reader::new(body, "Query");
    let sql = r.cstr()?;
    r.finish()?;
    Ok(sql)
}

#[derive(Debug, PartialEq, Eq)]
pub struct Parse<'a> {
    pub statement: &'a str,
    pub sql: &'a str,
    /// Parameter type OIDs the client gave (0: let the server infer).
    pub param_types: Vec<u32>,
}

pub fn parse(body: &[u8]) -> Result<Parse<'_>, ProtocolError> {
    let mut r = Reader::new(body, "Parse");
    let statement = r.cstr()?;
    let sql = r.cstr()?;
    let n = r.i16()?;
    if n < 0 {
        return Err(ProtocolError::new(
            "Parse message: negative parameter type count",
        ));
    }
    let param_types = (0..n)
        .map(|_| r.i32().map(|t| t as u32))
        .collect::<Result<_, _>>()?;
    r.finish()?;
    Ok(Parse {
        statement,
        sql,
        param_types,
    })
}

/// One bound parameter value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param<'a> {
    Null,
    Text(&'a [u8]),
    Binary(&'a [u8]),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a str,
    pub statement: &'a str,
    pub params: Params<'a>,
}

/// A Bind's parameters, held inline up to eight (nearly every statement's count): decoding
/// a Bind, once per statement, allocates nothing.
pub type Params<'a> = smallvec::SmallVec<[Param<'a>; 8]>;

pub fn bind(body: &[u8]) -> Result<Bind<'_>, ProtocolError> {
    let mut r = Reader::new(body, "Bind");
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    let nformats = r.i16()?;
    if nformats < 0 {
        return Err(ProtocolError::new("Bind message: negative format count"));
    }
    let formats = r.bytes(nformats as usize * 2)?;
    let nparams = r.i16()?;
    if nparams < 0 {
        return Err(ProtocolError::new("Bind message: negative parameter count"));
    }
    let nparams = nparams as usize;
    let nformats = nformats as usize;
    if nformats > 1 && nformats != nparams {
        return Err(ProtocolError::new(format!(
            "Bind message has {nformats} parameter formats for {nparams} parameters"
        )));
    }
    let format_of = |i: usize| -> Result<bool, ProtocolError> {
        let code = match nformats {
            0 => 0,
            1 => i16::from_be_bytes([formats[0], formats[1]]),
            _ => i16::from_be_bytes([formats[2 * i], formats[2 * i + 1]]),
        };
        match code {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(ProtocolError::new(format!(
                "Bind message: unknown format code {other}"
            ))),
        }
    };
    let mut params = Params::with_capacity(nparams);
    for i in 0..nparams {
        let len = r.i32()?;
        let param = match len {
            -1 => Param::Null,
            n if n < -1 => {
                return Err(ProtocolError::new(
                    "Bind message: negative parameter length",
                ))
            }
            n => {
                let value = r.bytes(n as usize)?;
                if format_of(i)? {
                    Param::Binary(value)
                } else {
                    Param::Text(value)
                }
            }
        };
        params.push(param);
    }
    let nresults = r.i16()?;
    if nresults < 0 {
        return Err(ProtocolError::new(
            "Bind message: negative result format count",
        ));
    }
    r.bytes(nresults as usize * 2)?;
    r.finish()?;
    Ok(Bind {
        portal,
        statement,
        params,
    })
}

#[derive(Debug, PartialEq, Eq)]
pub struct Execute<'a> {
    pub portal: &'a str,
    /// Row limit; 0 means all rows.
    pub max_rows: i32,
}

pub fn execute(body: &[u8]) -> Result<Execute<'_>, ProtocolError> {
    let mut r = Reader::new(body, "Execute");
    let portal = r.cstr()?;
    let max_rows = r.i32()?;
    r.finish()?;
    Ok(Execute { portal, max_rows })
}

/// What a Close or Describe names.
#[derive(Debug, PartialEq, Eq)]
pub enum Target<'a> {
    Statement(&'a str),
    Portal(&'a str),
}

/// Close and Describe share one layout: 'S' or 'P', then a name.
pub fn target<'a>(body: &'a [u8], what: &'static str) -> Result<Target<'a>, ProtocolError> {
    let mut r = Reader::new(body, what);
    let kind = r.u8()?;
    let name = r.cstr()?;
    r.finish()?;
    match kind {
        b'S' => Ok(Target::Statement(name)),
        b'P' => Ok(Target::Portal(name)),
        _ => Err(ProtocolError::new(format!(
            "{what} message: unknown target type"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind_body(formats: &[i16], params: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = b"p1\0s1\0".to_vec();
        b.extend((formats.len() as i16).to_be_bytes());
        for f in formats {
            b.extend(f.to_be_bytes());
        }
        b.extend((params.len() as i16).to_be_bytes());
        for p in params {
            match p {
                None => b.extend((-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend((v.len() as i32).to_be_bytes());
                    b.extend(*v);
                }
            }
        }
        b.extend(0i16.to_be_bytes());
        b
    }

    #[test]
    fn bind_decodes_formats_nulls_and_many_params() {
        // Twelve parameters ($10 and above), mixed formats, a NULL in the middle.
        let values: Vec<Option<&[u8]>> = (0..12)
            .map(|i| if i == 5 { None } else { Some(&b"\x00\x01"[..]) })
            .collect();
        let formats: Vec<i16> = (0..12).map(|i| (i % 2) as i16).collect();
        let body = bind_body(&formats, &values);
        let b = bind(&body).unwrap();
        assert_eq!((b.portal, b.statement, b.params.len()), ("p1", "s1", 12));
        assert_eq!(b.params[0], Param::Text(b"\x00\x01"));
        assert_eq!(b.params[1], Param::Binary(b"\x00\x01"));
        assert_eq!(b.params[5], Param::Null);
        assert_eq!(b.params[11], Param::Binary(b"\x00\x01"));

        // One format code applies to all parameters.
        let body = bind_body(&[1], &[Some(b"a"), Some(b"b")]);
        let all_binary = bind(&body).unwrap();
        assert!(all_binary
            .params
            .iter()
            .all(|p| matches!(p, Param::Binary(_))));
    }

    #[test]
    fn truncated_and_lying_messages_are_errors() {
        let body = bind_body(&[0], &[Some(b"abc")]);
        for cut in 0..body.len() {
            assert!(bind(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut lying = body.clone();
        lying[8..12].copy_from_slice(&1000i32.to_be_bytes()); // parameter length past the end
        assert!(bind(&lying).is_err());
        assert!(
            bind(&bind_body(&[0, 1, 0], &[Some(b"a")])).is_err(),
            "format count mismatch"
        );
        assert!(query(b"select 1").is_err(), "missing terminator");
        assert!(query(b"select 1\0extra").is_err());
        assert!(
            parse(b"s\0select\0\0\x01").is_err(),
            "parameter types truncated"
        );
        assert_eq!(
            parse(b"s\0select $1\0\0\x01\0\0\0\x17").unwrap(),
            Parse {
                statement: "s",
                sql: "select $1",
                param_types: vec![23],
            }
        );
        assert_eq!(execute(b"\0\0\0\0\x0a").unwrap().max_rows, 10);
        assert_eq!(target(b"Pcur\0", "Close").unwrap(), Target::Portal("cur"));
        assert!(target(b"Xcur\0", "Close").is_err());
    }
}
