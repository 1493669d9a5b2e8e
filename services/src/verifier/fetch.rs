//! Fetching a token from one source: http(s) with conditional GET, or a local file. Bounded by the client's
//! timeout and size cap; any status but 200 (and 304 when validators were sent) is a failure of that source.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};

use super::config::Source;
use common::client::{ClientError, HttpClient};

/// Cache validators a source gave with its last accepted token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// `ETag`.
    pub etag: Option<HeaderValue>,
    /// `Last-Modified`.
    pub last_modified: Option<HeaderValue>,
}

/// What a source answered.
#[derive(Debug)]
pub enum Fetched {
    /// 304: the token we hold is still current.
    NotModified,
    /// A token (not yet verified) and the validators that came with it.
    Token(String, Validators),
}

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Transport failure.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A status other than 200/304.
    #[error("HTTP status {0}")]
    Status(StatusCode),
    /// The file could not be read.
    #[error("{path}: {cause}")]
    File {
        /// The file.
        path: String,
        /// The error.
        cause: std::io::Error,
    },
    /// Larger than the cap.
    #[error("token larger than {0} bytes")]
    TooLarge(usize),
    /// Not UTF-8.
    #[error("body is not UTF-8")]
    NotText,
    /// The fetch's task ended without an answer.
    #[error("the fetch task failed")]
    Task,
}

/// Fetches from `source`, sending `validators` as If-None-Match / If-Modified-Since when given.
pub async fn fetch(
    client: &HttpClient,
    source: &Source,
    validators: Option<&Validators>,
    max_size: usize,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    match source {
        Source::File(path) => {
            // Read at most one byte past the cap: a huge file (or /dev/zero) is refused without holding it.
            let read = async {
                use tokio::io::AsyncReadExt;
                let file = tokio::fs::File::open(path).await?;
                let mut bytes = Vec::new();
                file.take(max_size as u64 + 1).read_to_end(&mut bytes).await?;
                Ok::<_, std::io::Error>(bytes)
            };
            let read = tokio::time::timeout(timeout, read).await.map_err(|_| FetchError::File {
                path: path.display().to_string(),
                cause: std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out"),
            })?;
            let bytes = read.map_err(|source| FetchError::File { path: path.display().to_string(), cause: source })?;
            if bytes.len() > max_size {
                return Err(FetchError::TooLarge(max_size));
            }
            let text = String::from_utf8(bytes).map_err(|_| FetchError::NotText)?;
            Ok(Fetched::Token(text, Validators::default()))
        }
        Source::Http(url) => {
            let mut headers = Vec::new();
            if let Some(v) = validators {
                if let Some(etag) = &v.etag {
                    headers.push((header::IF_NONE_MATCH, etag.clone()));
                }
                if let Some(lm) = &v.last_modified {
                    headers.push((header::IF_MODIFIED_SINCE, lm.clone()));
                }
            }
            let resp = client.send(Method::GET, url, &headers, Bytes::new()).await?;
            match resp.status {
                // Only an answer to a conditional request: a 304 to a plain GET says nothing was fetched.
                StatusCode::NOT_MODIFIED if !headers.is_empty() => Ok(Fetched::NotModified),
                StatusCode::OK => {
                    let text = String::from_utf8(resp.body.to_vec()).map_err(|_| FetchError::NotText)?;
                    let v = Validators {
                        etag: resp.headers.get(header::ETAG).cloned(),
                        last_modified: resp.headers.get(header::LAST_MODIFIED).cloned(),
                    };
                    Ok(Fetched::Token(text, v))
                }
                other => Err(FetchError::Status(other)),
            }
        }
    }
}

/// Fetches every source in `sources` at once, each with its `validators` and `timeout`: the answers, in the
/// sources' order, after one timeout at most however many sources hang.
pub async fn fetch_all(
    client: &HttpClient,
    sources: &[Source],
    validators: Vec<Option<Validators>>,
    max_size: usize,
    timeout: Duration,
) -> Vec<Result<Fetched, FetchError>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (source, validators)) in
        sources.iter().zip(validators.into_iter().chain(std::iter::repeat(None))).enumerate()
    {
        let (client, source) = (client.clone(), source.clone());
        tasks.spawn(async move { (i, fetch(&client, &source, validators.as_ref(), max_size, timeout).await) });
    }
    let mut answers: Vec<Option<Result<Fetched, FetchError>>> = sources.iter().map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, answer)) = done {
            answers[i] = Some(answer);
        }
    }
    answers.into_iter().map(|a| a.unwrap_or(Err(FetchError::Task))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::client::ClientOptions;

    /// The old code read a `file://` source whole before applying the cap: `/dev/zero` ran out of memory.
    #[tokio::test]
    async fn file_sources_are_read_bounded() {
        let client = HttpClient::new(ClientOptions::default()).unwrap();
        let zero = Source::File("/dev/zero".into());
        let got = fetch(&client, &zero, None, 4096, Duration::from_secs(5)).await;
        assert!(matches!(got, Err(FetchError::TooLarge(4096))), "{got:?}");
        let dir = tempfile::tempdir().unwrap();
        let (small, exact) = (dir.path().join("small"), dir.path().join("exact"));
        std::fs::write(&small, "a.b.c").unwrap();
        std::fs::write(&exact, "x".repeat(4096)).unwrap();
        let got = fetch(&client, &Source::File(small), None, 4096, Duration::from_secs(5)).await.unwrap();
        assert!(matches!(got, Fetched::Token(t, _) if t == "a.b.c"));
        let got = fetch(&client, &Source::File(exact), None, 4096, Duration::from_secs(5)).await;
        assert!(matches!(got, Ok(Fetched::Token(t, _)) if t.len() == 4096));
    }

    /// A source that answers 304 to everything. A 304 counts as "not modified" only when the request was
    /// conditional: the verifier used to take it after a 200 that carried neither an ETag nor a Last-Modified
    /// (so it sent nothing conditional), and stopped trying the mirrors.
    #[tokio::test]
    async fn a_304_to_an_unconditional_request_is_a_failure() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = conn.write_all(b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n").await;
                });
            }
        });
        let client = HttpClient::new(ClientOptions::default()).unwrap();
        let source = crate::verifier::config::parse_source(&format!("http://{addr}/token")).unwrap();
        let timeout = Duration::from_secs(5);
        let nothing = Validators::default();
        let got = fetch(&client, &source, Some(&nothing), 4096, timeout).await;
        assert!(matches!(got, Err(FetchError::Status(StatusCode::NOT_MODIFIED))), "{got:?}");
        let got = fetch(&client, &source, None, 4096, timeout).await;
        assert!(matches!(got, Err(FetchError::Status(StatusCode::NOT_MODIFIED))), "{got:?}");
        let tagged = Validators { etag: Some(HeaderValue::from_static("\"1\"")), last_modified: None };
        let got = fetch(&client, &source, Some(&tagged), 4096, timeout).await;
        assert!(matches!(got, Ok(Fetched::NotModified)), "{got:?}");
    }
}
