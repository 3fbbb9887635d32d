//! The log's side of tlog-witness: posting a checkpoint with its consistency proof to a
//! witness and reading the answer (cosignature lines, the size it last cosigned, or a
//! refusal), and fetching a witness's latest cosigned checkpoint of a log. One HTTP/1.1
//! connection per call: a checkpoint goes out about once a second.

use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use super::AddCheckpoint;

/// The largest reply read: cosignature lines or a checkpoint note.
const REPLY_BYTES_MAX: usize = 64 * 1024;

/// Where a witness listens: `http://host:port` with an optional path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    authority: String,
    prefix: String,
}

impl Endpoint {
    /// Parses `http://host:port[/prefix]`. Only plain HTTP: a cosignature is signed, so the
    /// channel needs neither secrecy nor authentication for the protocol to be safe.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("must start with http:// (cosignatures are signed; no TLS is needed)")?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let Some((host, port)) = authority.rsplit_once(':') else {
            return Err("must name host:port".into());
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(format!("{host:?} is not a host name or address"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("port {port:?} must be a number from 1 to 65535")),
        }
        Ok(Endpoint {
            authority: authority.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

/// What a witness answered to add-checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// 200: the witness's cosignature line(s), each newline-terminated.
    Cosigned(String),
    /// 409: the size the witness last cosigned; send the proof from there.
    Conflict(u64),
    /// Any other status, with the witness's message.
    Refused { status: u16, message: String },
}

/// Why a call to a witness failed before it answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("unreadable answer: {0}")]
    BadReply(String),
}

/// Posts `req` to the witness and reads its answer, all within `timeout`.
pub async fn add_checkpoint(
    endpoint: &Endpoint,
    req: &AddCheckpoint,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let call = call(endpoint, Method::POST, "/add-checkpoint", req.to_body());
    let (status, body) = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| ClientError::Timeout(timeout))??;
    Ok(match status {
        StatusCode::OK => Reply::Cosigned(body),
        StatusCode::CONFLICT => Reply::Conflict(
            body.trim_end_matches('\n')
                .parse()
                .map_err(|_| ClientError::BadReply("409 without a size".into()))?,
        ),
        s => Reply::Refused {
            status: s.as_u16(),
            message: body.trim_end().chars().take(500).collect(),
        },
    })
}

/// The witness's latest cosigned checkpoint of the log with `origin`, if it has one.
pub async fn latest(
    endpoint: &Endpoint,
    origin: &str,
    timeout: Duration,
) -> Result<Option<String>, ClientError> {
    let path = format!("/{}/checkpoint", super::origin_hash(origin));
    let call = call(endpoint, Method::GET, &path, String::new());
    let (status, body) = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| ClientError::Timeout(timeout))??;
    match status {
        StatusCode::OK => Ok(Some(body)),
        StatusCode::NOT_FOUND => Ok(None),
        s => Err(ClientError::BadReply(format!("status {s}"))),
    }
}

async fn call(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    body: String,
) -> Result<(StatusCode, String), ClientError> {
    let stream = tokio::net::TcpStream::connect(&endpoint.authority)
        .await
        .map_err(|e| ClientError::Connect(endpoint.authority.clone(), e))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .uri(format!("{}{path}", endpoint.prefix))
        .header(HOST, &endpoint.authority)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| ClientError::BadReply(e.to_string()))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = Limited::new(response.into_body(), REPLY_BYTES_MAX)
        .collect()
        .await
        .map_err(|e| ClientError::BadReply(e.to_string()))?
        .to_bytes();
    conn.abort();
    let body =
        String::from_utf8(body.to_vec()).map_err(|_| ClientError::BadReply("not UTF-8".into()))?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_plain_http_with_a_port() {
        let e = Endpoint::parse("http://127.0.0.1:7380/witness/").unwrap();
        assert_eq!(e.to_string(), "http://127.0.0.1:7380/witness");
        assert!(
            Endpoint::parse("https://w:1")
                .unwrap_err()
                .contains("http://")
        );
        assert!(
            Endpoint::parse("http://w")
                .unwrap_err()
                .contains("host:port")
        );
    }
}
