//! Which upstream a request to the metering proxy goes to, read from the API the
//! request speaks, never guessed from its path: a key must reach only the provider it
//! was issued by.
//!
//! | the request carries | it goes to |
//! |---|---|
//! | `anthropic-version` (whatever header carries the key: recent Anthropic SDKs send `Authorization: Bearer sk-ant-…`, older ones `x-api-key`) | the Anthropic upstream |
//! | `x-api-key`, no `Authorization` | the Anthropic upstream |
//! | `Authorization: Bearer …`, no `anthropic-version`, no `x-api-key` | the OpenAI-compatible upstream |
//! | no credential at all (a local vLLM or Ollama) | by path: `/v1/messages…` to the Anthropic upstream, the rest to the OpenAI-compatible one |
//! | Azure's `api-key` or Gemini's `x-goog-api-key`, whatever else it carries | refused, 400, with the reason |
//! | anything else with a credential (`x-api-key` beside `Authorization`, an `Authorization` scheme other than `Bearer`) | refused, 400, with the reason |
//! | a path outside `/v1/` | refused, 404 |
//!
//! So the Anthropic SDK's `models.list()`, `messages.count_tokens`, `/v1/complete`,
//! files and batches reach Anthropic with its key, and the OpenAI SDK's `/v1/models`,
//! files and batches reach the OpenAI-compatible upstream with its own.
//!
//! Only a `POST` to a generating path is metered (and may be refused by a budget):
//! a `GET /v1/chat/completions`, OpenAI's list of stored completions, goes through
//! unmetered like `/v1/models`.
//!
//! ```
//! use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION};
//! use hyper::Method;
//! use loopwatch::llm::route::{place, Api};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer sk-ant-key"));
//! headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
//! assert_eq!(place(&Method::GET, "/v1/models", &headers).unwrap().api, Api::Anthropic);
//! headers.remove("anthropic-version");
//! assert_eq!(place(&Method::GET, "/v1/models", &headers).unwrap().api, Api::OpenAi);
//! ```

use hyper::header::{HeaderMap, AUTHORIZATION};
use hyper::Method;

use super::Operation;

/// The two APIs the proxy serves, each forwarded to its own upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Api {
    /// OpenAI-compatible: OpenAI, a LiteLLM proxy, vLLM, Ollama, OpenRouter …
    OpenAi,
    /// Anthropic's.
    Anthropic,
}

impl Api {
    /// The provider's name, as the `gen_ai.provider.name` label has it.
    pub const fn provider(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
        }
    }
}

/// Where a request goes, and what it is metered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Placement {
    /// The upstream it goes to.
    pub api: Api,
    /// What it is metered as; `None` for requests that are forwarded unmetered
    /// (`/v1/models`, `/v1/messages/count_tokens`, files, batches …, and any method
    /// but `POST`).
    pub operation: Option<Operation>,
}

/// Why a request was refused; its text is what the loop is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The path is not an API path.
    #[error("loopwatch's LLM proxy forwards /v1/... only")]
    NotApi,
    /// Both an `x-api-key` and an `Authorization` header, and no `anthropic-version`
    /// to say which API the request speaks.
    #[error(
        "loopwatch's LLM proxy cannot tell which provider this request is for: it carries \
         both x-api-key and Authorization but no anthropic-version header; send one key, or \
         anthropic-version for Anthropic's API"
    )]
    TwoCredentials,
    /// An `Authorization` scheme other than `Bearer`.
    #[error(
        "loopwatch's LLM proxy cannot tell which provider this request is for: its \
         Authorization header is not a Bearer token, and it carries no anthropic-version \
         header; it was not forwarded"
    )]
    NotBearer,
    /// A credential in a header neither API uses.
    #[error(
        "loopwatch's LLM proxy does not forward requests that carry their key in the {0} \
         header: neither the OpenAI-compatible nor the Anthropic upstream takes it; it was \
         not forwarded"
    )]
    ForeignCredential(&'static str),
}

impl Refusal {
    /// The HTTP status the loop gets.
    pub const fn status(self) -> u16 {
        match self {
            Refusal::NotApi => 404,
            _ => 400,
        }
    }
}

/// Headers that carry a key for an API the proxy does not serve.
const FOREIGN_CREDENTIALS: [&str; 2] = ["api-key", "x-goog-api-key"];

/// Where a `method` request for `path` with `headers` goes, and what it is metered
/// as, or why it is refused.
pub fn place(method: &Method, path: &str, headers: &HeaderMap) -> Result<Placement, Refusal> {
    let rest = path.strip_prefix("/v1/").ok_or(Refusal::NotApi)?;
    // A key for another provider is never sent on, whatever else the request carries.
    if let Some(name) = FOREIGN_CREDENTIALS
        .into_iter()
        .find(|name| headers.contains_key(*name))
    {
        return Err(Refusal::ForeignCredential(name));
    }
    let api = if headers.contains_key("anthropic-version") {
        Api::Anthropic
    } else if headers.contains_key("x-api-key") {
        if headers.contains_key(AUTHORIZATION) {
            return Err(Refusal::TwoCredentials);
        }
        Api::Anthropic
    } else if let Some(authorization) = headers.get(AUTHORIZATION) {
        if !is_bearer(authorization.as_bytes()) {
            return Err(Refusal::NotBearer);
        }
        Api::OpenAi
    } else if rest == "messages" || rest.starts_with("messages/") {
        // No credential: a local server, placed by its path.
        Api::Anthropic
    } else {
        Api::OpenAi
    };
    Ok(Placement {
        api,
        // Only a POST generates: a GET of the same path reads what is stored.
        operation: operation(rest).filter(|_| method == Method::POST),
    })
}

/// What a path (after `/v1/`) is metered as, whichever upstream serves it.
fn operation(rest: &str) -> Option<Operation> {
    match rest {
        "chat/completions" => Some(Operation::Chat),
        "messages" => Some(Operation::Chat),
        "completions" => Some(Operation::TextCompletion),
        "responses" => Some(Operation::GenerateContent),
        "embeddings" => Some(Operation::Embeddings),
        _ => None,
    }
}

/// Whether an `Authorization` value is a bearer token (the scheme is
/// case-insensitive).
fn is_bearer(value: &[u8]) -> bool {
    value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn api(path: &str, pairs: &[(&'static str, &'static str)]) -> Result<Api, Refusal> {
        place(&Method::POST, path, &headers(pairs)).map(|p| p.api)
    }

    const BEARER_ANT: (&str, &str) = ("authorization", "Bearer sk-ant-k");
    const VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");

    #[test]
    fn the_anthropic_sdks_requests_reach_anthropic_whatever_carries_the_key() {
        for path in [
            "/v1/messages",
            "/v1/models",
            "/v1/models/claude-x",
            "/v1/messages/count_tokens",
            "/v1/messages/batches",
            "/v1/complete",
            "/v1/files",
        ] {
            assert_eq!(
                api(path, &[BEARER_ANT, VERSION]),
                Ok(Api::Anthropic),
                "{path}"
            );
            assert_eq!(
                api(path, &[("x-api-key", "sk-ant-k"), VERSION]),
                Ok(Api::Anthropic),
                "{path}"
            );
            assert_eq!(
                api(path, &[("x-api-key", "sk-ant-k")]),
                Ok(Api::Anthropic),
                "{path}"
            );
        }
    }

    #[test]
    fn bearer_tokens_without_anthropic_version_reach_the_openai_upstream() {
        for path in [
            "/v1/chat/completions",
            "/v1/models",
            "/v1/files",
            "/v1/batches",
            "/v1/messages",
        ] {
            assert_eq!(
                api(path, &[("authorization", "Bearer sk-k")]),
                Ok(Api::OpenAi)
            );
            assert_eq!(
                api(path, &[("authorization", "bearer EMPTY")]),
                Ok(Api::OpenAi)
            );
        }
    }

    #[test]
    fn requests_without_a_credential_are_placed_by_path() {
        assert_eq!(api("/v1/messages", &[]), Ok(Api::Anthropic));
        assert_eq!(api("/v1/messages/count_tokens", &[]), Ok(Api::Anthropic));
        assert_eq!(api("/v1/chat/completions", &[]), Ok(Api::OpenAi));
        assert_eq!(api("/v1/models", &[]), Ok(Api::OpenAi));
    }

    #[test]
    fn requests_that_cannot_be_placed_are_refused_with_the_reason() {
        assert_eq!(
            api(
                "/v1/models",
                &[("x-api-key", "a"), ("authorization", "Bearer b")]
            ),
            Err(Refusal::TwoCredentials)
        );
        assert_eq!(
            api("/v1/chat/completions", &[("authorization", "Basic dTpw")]),
            Err(Refusal::NotBearer)
        );
        assert_eq!(
            api("/v1/chat/completions", &[("authorization", "Bearer")]),
            Err(Refusal::NotBearer)
        );
        assert_eq!(
            api("/v1/chat/completions", &[("api-key", "azure")]),
            Err(Refusal::ForeignCredential("api-key"))
        );
        assert_eq!(
            api("/v1/models", &[("x-goog-api-key", "g")]),
            Err(Refusal::ForeignCredential("x-goog-api-key"))
        );
        // Beside a key that would place it, a foreign key is still never sent on.
        assert_eq!(
            api(
                "/v1/chat/completions",
                &[("authorization", "Bearer sk-x"), ("api-key", "azure")]
            ),
            Err(Refusal::ForeignCredential("api-key"))
        );
        assert_eq!(
            api("/v1/messages", &[("x-goog-api-key", "g"), VERSION]),
            Err(Refusal::ForeignCredential("x-goog-api-key"))
        );
        assert_eq!(api("/metrics", &[BEARER_ANT]), Err(Refusal::NotApi));
        assert_eq!(api("/v1", &[]), Err(Refusal::NotApi));
        assert_eq!(Refusal::NotApi.status(), 404);
        assert_eq!(Refusal::TwoCredentials.status(), 400);
        assert!(Refusal::ForeignCredential("api-key")
            .to_string()
            .contains("api-key header"));
    }

    #[test]
    fn operations_follow_the_path_whichever_upstream_serves_it() {
        let op = |path: &str, pairs: &[(&'static str, &'static str)]| {
            place(&Method::POST, path, &headers(pairs))
                .unwrap()
                .operation
        };
        assert_eq!(
            op("/v1/messages", &[BEARER_ANT, VERSION]),
            Some(Operation::Chat)
        );
        assert_eq!(
            op("/v1/messages/count_tokens", &[BEARER_ANT, VERSION]),
            None
        );
        assert_eq!(op("/v1/models", &[BEARER_ANT, VERSION]), None);
        assert_eq!(
            op("/v1/chat/completions", &[("authorization", "Bearer k")]),
            Some(Operation::Chat)
        );
        assert_eq!(
            op("/v1/responses", &[("authorization", "Bearer k")]),
            Some(Operation::GenerateContent)
        );
        assert_eq!(op("/v1/embeddings", &[]), Some(Operation::Embeddings));
        assert_eq!(op("/v1/completions", &[]), Some(Operation::TextCompletion));
    }

    /// Only a POST is metered: a GET of a generating path (OpenAI's list of stored
    /// completions), or any other method, goes to the same upstream unmetered.
    #[test]
    fn only_a_post_is_metered() {
        let bearer = headers(&[("authorization", "Bearer k")]);
        for method in [Method::GET, Method::DELETE, Method::HEAD, Method::OPTIONS] {
            let placement = place(&method, "/v1/chat/completions", &bearer).unwrap();
            assert_eq!(
                (placement.api, placement.operation),
                (Api::OpenAi, None),
                "{method}"
            );
        }
        let anthropic = headers(&[BEARER_ANT, VERSION]);
        assert_eq!(
            place(&Method::GET, "/v1/messages", &anthropic)
                .unwrap()
                .operation,
            None
        );
        assert_eq!(
            place(&Method::POST, "/v1/chat/completions", &bearer)
                .unwrap()
                .operation,
            Some(Operation::Chat)
        );
    }
}
