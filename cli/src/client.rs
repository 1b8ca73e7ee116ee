//! The HTTP client of the client commands: base URL, API key, and errors
//! that carry the server's own message.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// An answer as the type the API documents; a mismatch is a client and
/// server of different versions, said as such.
fn typed<T: DeserializeOwned>(path: &str, body: Value) -> anyhow::Result<T> {
    serde_json::from_value(body).with_context(|| {
        format!("the answer of {path} is not what this client understands: is the server another version?")
    })
}

#[derive(Args, Clone)]
pub struct Credentials {
    /// API key (default: the standalone development key in --data-dir).
    #[arg(long, env = "AFORO_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Where `aforo standalone` keeps its development key.
    #[arg(long, env = "AFORO_DATA_DIR", default_value = "aforo-data")]
    pub data_dir: PathBuf,
}

impl Credentials {
    pub fn key(&self) -> anyhow::Result<String> {
        if let Some(key) = &self.api_key {
            return Ok(key.trim().to_owned());
        }
        let file = self.data_dir.join("dev-api-key");
        match std::fs::read_to_string(&file) {
            Ok(key) => Ok(key.trim().to_owned()),
            Err(_) => bail!(
                "no API key: pass --api-key, set AFORO_API_KEY, or run `aforo standalone` here to create {}",
                file.display()
            ),
        }
    }
}

/// Where an HTTP client command connects.
#[derive(Args, Clone)]
pub struct Server {
    /// HTTP address of the server.
    #[arg(long, env = "AFORO_HTTP_URL", default_value = "http://127.0.0.1:8470")]
    pub http: String,
    #[command(flatten)]
    pub credentials: Credentials,
}

pub struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
}

/// A request the server refused: status, code and its message.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {message}")]
pub struct Refused {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub body: Value,
}

impl Client {
    pub fn new(server: &Server) -> anyhow::Result<Self> {
        Ok(Client {
            base: server.http.trim_end_matches('/').to_owned(),
            key: server.credentials.key()?,
            http: reqwest::Client::new(),
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach aforo at {}", self.base))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .context("the server's answer is not JSON")?;
        if !status.is_success() {
            return Err(Refused {
                status: status.as_u16(),
                code: body["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                message: body["error"]["message"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_owned(),
                body,
            }
            .into());
        }
        Ok(body)
    }

    /// A GET, its answer read as `T` (a typed `aforo_api::v1` answer, or a
    /// `Value` to print as it is).
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let body = self
            .send(self.http.get(format!("{}{path}", self.base)).query(query))
            .await?;
        typed(path, body)
    }

    /// A GET whose answer is not JSON (a CSV export).
    pub async fn get_bytes(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Vec<u8>> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach aforo at {}", self.base))?;
        let status = response.status();
        let bytes = response.bytes().await?.to_vec();
        if !status.is_success() {
            let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            bail!(
                "{status}: {}",
                body["error"]["message"].as_str().unwrap_or("unknown error")
            );
        }
        Ok(bytes)
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let answer = self
            .send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await?;
        typed(path, answer)
    }

    /// POSTs a streamed body.
    pub async fn post_stream(
        &self,
        path: &str,
        content_type: &str,
        body: reqwest::Body,
    ) -> anyhow::Result<Value> {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    /// GETs a path whose answer is streamed into `out` as it arrives.
    pub async fn download(
        &self,
        path: &str,
        out: &mut (dyn std::io::Write + Send),
    ) -> anyhow::Result<u64> {
        let mut response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach aforo at {}", self.base))?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or_default();
            bail!(
                "{status}: {}",
                body["error"]["message"].as_str().unwrap_or("unknown error")
            );
        }
        let mut written = 0u64;
        while let Some(chunk) = response.chunk().await.context("the download broke off")? {
            out.write_all(&chunk).context("cannot write the results")?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    pub async fn post_text<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: String,
    ) -> anyhow::Result<T> {
        let answer = self
            .send(
                self.http
                    .post(format!("{}{path}", self.base))
                    .header("content-type", content_type)
                    .body(body),
            )
            .await?;
        typed(path, answer)
    }
}
