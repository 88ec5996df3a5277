//! Sorts the Kubernetes client's errors into the actuator's three outcomes.
//!
//! In: a `kube::Error` and the request that met it (verb, resource, object). Out: a
//! [`BackendError`] whose message names that request, so an operator reading a refusal or
//! a fatal stop knows which permission or object to look at. Retriable: connection
//! failures, 5xx, 409 (stale resourceVersion: re-observe and retry) and 429 (rate limit,
//! or an eviction a PodDisruptionBudget blocks). Fatal: 401/403 and client set-up errors.
//! Refused: everything else the API server rejected (404 object gone, 422 invalid).

use crate::actuate::backend::BackendError;

/// One request of the backend, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub verb: &'a str,
    pub resource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

impl std::fmt::Display for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {} {}", self.verb, self.resource, self.name)
        } else {
            write!(f, "{} {} {}/{}", self.verb, self.resource, self.namespace, self.name)
        }
    }
}

/// The HTTP status the API server answered with, if it answered at all.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Sorts one error of `request`.
pub fn classify(request: Request<'_>, error: kube::Error) -> BackendError {
    match &error {
        kube::Error::Api(status) => {
            let what = format!("{request}: {} {} ({})", status.code, status.reason, status.message);
            match status.code {
                401 | 403 => BackendError::Fatal(format!("permission denied to {what}")),
                409 => BackendError::Transient(format!("conflict, the object changed meanwhile: {what}")),
                429 if request.resource == "pods/eviction" => {
                    BackendError::Transient(format!("eviction blocked by a PodDisruptionBudget: {what}"))
                }
                429 => BackendError::Transient(format!("throttled: {what}")),
                500..=599 => BackendError::Transient(format!("API server error: {what}")),
                404 => BackendError::Refused(format!("not found: {what}")),
                _ => BackendError::Refused(format!("rejected: {what}")),
            }
        }
        kube::Error::HyperError(_)
        | kube::Error::Service(_)
        | kube::Error::HttpError(_)
        | kube::Error::ReadEvents(_)
        | kube::Error::SerdeError(_)
        | kube::Error::FromUtf8(_) => BackendError::Transient(format!("{request}: {error}")),
        _ => BackendError::Fatal(format!("{request}: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(kube::core::Status::failure("no", "Reason").with_code(code).boxed())
    }

    const PATCH_POD: Request<'static> = Request { verb: "patch", resource: "pods", namespace: "ns", name: "web-1" };
    const EVICT: Request<'static> =
        Request { verb: "create", resource: "pods/eviction", namespace: "ns", name: "web-1" };

    #[test]
    fn sorts_by_status() {
        assert!(matches!(classify(PATCH_POD, api(409)), BackendError::Transient(_)));
        assert!(matches!(classify(PATCH_POD, api(429)), BackendError::Transient(_)));
        assert!(matches!(classify(PATCH_POD, api(503)), BackendError::Transient(_)));
        assert!(matches!(classify(PATCH_POD, api(404)), BackendError::Refused(_)));
        assert!(matches!(classify(PATCH_POD, api(422)), BackendError::Refused(_)));
        assert!(matches!(classify(EVICT, api(429)), BackendError::Transient(m) if m.contains("PodDisruptionBudget")));
        match classify(PATCH_POD, api(403)) {
            BackendError::Fatal(message) => assert!(message.contains("patch pods ns/web-1"), "{message}"),
            other => panic!("403 sorted as {other:?}"),
        }
    }
}
