//! A Confluent Schema Registry client with the caches the pipeline needs: schema text by id,
//! and id by (subject, schema text). Calls go through `schema_registry_converter`.
//!
//! Transient failures (registry unreachable, 5xx) are retried with exponential backoff for as long
//! as the [`RetryPolicy`] allows: by default forever, so the pipeline blocks rather than drops.
//! Anything else (unknown id, a schema the registry rejects) is fatal and returned at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use schema_registry_converter::async_impl::schema_registry::{
    get_schema_by_id, post_schema, SrSettings,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

/// How to reach a registry.
#[derive(Clone, Default)]
pub struct RegistrySettings {
    pub url: String,
    /// Basic-auth user and password.
    pub basic_auth: Option<(String, String)>,
    /// PEM of a CA to trust for an `https://` registry.
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
}

impl std::fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySettings")
            .field("url", &self.url)
            .field(
                "basic_auth",
                &self.basic_auth.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// How long to keep retrying transient registry failures. The default retries forever.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryPolicy {
    /// `None`: retry forever (the pipeline's choice: block, never drop).
    pub max_elapsed: Option<Duration>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached or answered 5xx; retrying may help.
    #[error("schema registry {url} unavailable: {reason}")]
    Unavailable { url: String, reason: String },
    /// The registry has no schema with this id.
    #[error("schema id {id} is not in the registry at {url}")]
    UnknownId { url: String, id: u32 },
    /// The registry refused the call.
    #[error("schema registry {url} refused {what}: {reason}")]
    Refused {
        url: String,
        what: String,
        reason: String,
    },
    #[error("invalid registry settings for {url}: {reason}")]
    Settings { url: String, reason: String },
}

impl RegistryError {
    pub fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. })
    }
}

/// A registry client with caches. Cheap to clone; clones share the caches.
#[derive(Clone)]
pub struct Registry {
    url: String,
    sr: SrSettings,
    http: reqwest::Client,
    auth: Option<(String, String)>,
    retry: RetryPolicy,
    by_id: Arc<Mutex<HashMap<u32, Arc<str>>>>,
    ids: Arc<Mutex<HashMap<(String, String), u32>>>,
    configured_subjects: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("url", &self.url).finish()
    }
}

fn is_transient(e: &SRCError) -> bool {
    if e.retriable {
        return true;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<reqwest::Error>() {
            return r.is_connect()
                || r.is_timeout()
                || r.is_request()
                || r.status().is_some_and(|s| s.is_server_error());
        }
        src = s.source();
    }
    let msg = e.to_string();
    msg.contains("status 5") || msg.contains("error sending request") || msg.contains("connect")
}

fn describe(e: &SRCError) -> String {
    match &e.cause {
        Some(c) => format!("{}: {c}", e.error),
        None => e.error.clone(),
    }
}

impl Registry {
    pub fn new(settings: &RegistrySettings) -> Result<Self, RegistryError> {
        let url = settings.url.trim_end_matches('/').to_owned();
        let bad = |reason: String| RegistryError::Settings {
            url: url.clone(),
            reason,
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad("the URL must start with http:// or https://".into()));
        }
        let timeout = settings.timeout.unwrap_or(Duration::from_secs(10));
        let client_builder = || -> Result<reqwest::ClientBuilder, RegistryError> {
            let mut b = reqwest::Client::builder().timeout(timeout).no_proxy();
            if let Some(pem) = &settings.ca_pem {
                let cert = reqwest::Certificate::from_pem(pem)
                    .map_err(|e| bad(format!("CA certificate: {e}")))?;
                b = b.add_root_certificate(cert);
            }
            Ok(b)
        };
        let mut sb = SrSettings::new_builder(url.clone());
        sb.set_timeout(timeout).no_proxy();
        if let Some((u, p)) = &settings.basic_auth {
            sb.set_basic_authorization(u, Some(p));
        }
        let sr = sb
            .build_with(client_builder()?)
            .map_err(|e| bad(describe(&e)))?;
        let http = client_builder()?.build().map_err(|e| bad(e.to_string()))?;
        Ok(Registry {
            url,
            sr,
            http,
            auth: settings.basic_auth.clone(),
            retry: RetryPolicy::default(),
            by_id: Default::default(),
            ids: Default::default(),
            configured_subjects: Default::default(),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn retrying<T, F, Fut>(&self, what: &str, f: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5));
        backoff = match self.retry.max_elapsed {
            Some(d) => backoff.with_total_delay(Some(d)).with_max_times(usize::MAX),
            None => backoff.without_max_times(),
        };
        f.retry(backoff)
            .when(RegistryError::is_transient)
            .notify(|e, dur| {
                tracing::warn!(registry = %self.url, %what, error = %e, retry_in = ?dur, "schema registry call failed; retrying");
            })
            .await
    }

    /// A failed registry call as our error: `Unavailable` (retried) if transient, else `Refused`,
    /// naming `what` was refused.
    fn failed(&self, e: &SRCError, what: impl FnOnce() -> String) -> RegistryError {
        if is_transient(e) {
            RegistryError::Unavailable {
                url: self.url.clone(),
                reason: describe(e),
            }
        } else {
            RegistryError::Refused {
                url: self.url.clone(),
                what: what(),
                reason: describe(e),
            }
        }
    }

    /// The schema text registered under `id`, from the cache or the registry.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<str>, RegistryError> {
        if let Some(s) = self.by_id.lock().unwrap().get(&id) {
            return Ok(s.clone());
        }
        let schema = self
            .retrying("get schema by id", || async {
                get_schema_by_id(id, &self.sr).await.map_err(|e| {
                    let unknown = describe(&e).contains("404") || describe(&e).contains("40403");
                    if unknown && !is_transient(&e) {
                        RegistryError::UnknownId {
                            url: self.url.clone(),
                            id,
                        }
                    } else {
                        self.failed(&e, || format!("lookup of schema id {id}"))
                    }
                })
            })
            .await?;
        let s: Arc<str> = Arc::from(schema.schema.as_str());
        self.by_id.lock().unwrap().insert(id, s.clone());
        Ok(s)
    }

    /// Registers `schema` under `subject` (or finds it there) and returns its id. The subject's
    /// compatibility is set to NONE first: the source database decides what a table looks like,
    /// and every version must be registrable; readers always decode with the writer's schema.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let key = (subject.to_owned(), schema.to_owned());
        if let Some(id) = self.ids.lock().unwrap().get(&key) {
            return Ok(*id);
        }
        self.ensure_compatibility_none(subject).await?;
        let registered = self
            .retrying("register schema", || async {
                post_schema(
                    &self.sr,
                    subject.to_owned(),
                    SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned()),
                )
                .await
                .map_err(|e| self.failed(&e, || format!("schema for subject '{subject}'")))
            })
            .await?;
        self.ids.lock().unwrap().insert(key, registered.id);
        self.by_id
            .lock()
            .unwrap()
            .entry(registered.id)
            .or_insert_with(|| Arc::from(schema));
        Ok(registered.id)
    }

    /// The compatibility level configured on a subject (`GET /config/<subject>`), or None when
    /// it has none of its own.
    async fn compatibility_of(&self, config_url: &str) -> Result<Option<String>, RegistryError> {
        let mut req = self.http.get(config_url);
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        let unavailable = |reason: String| RegistryError::Unavailable {
            url: self.url.clone(),
            reason,
        };
        let resp = req.send().await.map_err(|e| unavailable(e.to_string()))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(unavailable(format!(
                "HTTP {} reading {config_url}",
                resp.status()
            )));
        }
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| unavailable(format!("reading {config_url}: {e}")))?;
        // Confluent answers `compatibilityLevel`; some versions and Apicurio `compatibility`.
        Ok(v.get("compatibilityLevel")
            .or_else(|| v.get("compatibility"))
            .and_then(|l| l.as_str())
            .map(str::to_owned))
    }

    async fn ensure_compatibility_none(&self, subject: &str) -> Result<(), RegistryError> {
        if self.configured_subjects.lock().unwrap().contains(subject) {
            return Ok(());
        }
        let url = format!("{}/config/{}", self.url, subject.replace('/', "%2F"));
        self.retrying("set subject compatibility", || async {
            let mut req = self
                .http
                .put(&url)
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(r#"{"compatibility":"NONE"}"#);
            if let Some((u, p)) = &self.auth {
                req = req.basic_auth(u, Some(p));
            }
            let resp = req.send().await.map_err(|e| RegistryError::Unavailable {
                url: self.url.clone(),
                reason: e.to_string(),
            })?;
            let status = resp.status();
            if status.is_server_error() {
                return Err(RegistryError::Unavailable {
                    url: self.url.clone(),
                    reason: format!("HTTP {status} setting compatibility of '{subject}'"),
                });
            }
            if status == reqwest::StatusCode::CONFLICT {
                // Another writer set the subject's rule at the same moment (Apicurio answers the
                // loser of two concurrent PUTs 409 "A rule named 'COMPATIBILITY' already
                // exists"). What counts is the rule in force: NONE is done; anything else is
                // set again on the next try.
                let body = resp.text().await.unwrap_or_default();
                return match self.compatibility_of(&url).await? {
                    Some(level) if level == "NONE" => Ok(()),
                    other => Err(RegistryError::Unavailable {
                        url: self.url.clone(),
                        reason: format!(
                            "setting compatibility NONE on '{subject}' raced another writer (HTTP 409: {body}); the subject's compatibility is now {}",
                            other.as_deref().unwrap_or("unset")
                        ),
                    }),
                };
            }
            if !status.is_success() {
                let body = resp.text().await.unwrap_or_default();
                return Err(RegistryError::Refused {
                    url: self.url.clone(),
                    what: format!("compatibility NONE for subject '{subject}'"),
                    reason: format!("HTTP {status}: {body}"),
                });
            }
            Ok(())
        })
        .await?;
        self.configured_subjects
            .lock()
            .unwrap()
            .insert(subject.to_owned());
        Ok(())
    }
}
