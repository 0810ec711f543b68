//! An in-memory Kubernetes API server behind kube-rs's mock service (tower-test): enough of the
//! API for the operator's reconcilers (get, list with label selectors, create, server-side apply,
//! JSON and merge patches, status subresources, delete with finalizers), recording every request
//! so tests can assert what the operator asked for.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

/// The stored objects by `namespace/plural/name`, and the requests seen.
#[derive(Clone, Default)]
pub struct FakeKube {
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
    requests: Arc<Mutex<Vec<String>>>,
    version: Arc<Mutex<u64>>,
}

/// A parsed resource path.
struct Target {
    namespace: String,
    plural: String,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rest = match *parts.first()? {
        "api" => &parts[2..],
        "apis" => &parts[3..],
        _ => return None,
    };
    if rest.first() != Some(&"namespaces") || rest.len() < 3 {
        return None;
    }
    Some(Target {
        namespace: rest[1].to_string(),
        plural: rest[2].to_string(),
        name: rest.get(3).map(|s| s.to_string()),
        status: rest.get(4) == Some(&"status"),
    })
}

fn key(namespace: &str, plural: &str, name: &str) -> String {
    format!("{namespace}/{plural}/{name}")
}

fn status_body(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": reason, "message": message, "code": code.as_u16()
    })
}

/// Overlays `patch` on `base`: objects merge key by key, anything else is replaced.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| {
            v.replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/")
                .replace('+', " ")
        })
    })
}

fn matches_selector(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let Some((k, v)) = term.split_once('=') else {
            return false;
        };
        object["metadata"]["labels"][k].as_str() == Some(v)
    })
}

impl FakeKube {
    /// A client talking to a new fake API server, and the server.
    pub fn start() -> (Client, FakeKube) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = FakeKube::default();
        let server = fake.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let (code, value) = server.handle(&parts, &bytes);
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&value).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
        });
        (Client::new(service, "default"), fake)
    }

    /// Stores an object as if a user had applied it.
    pub fn insert(&self, plural: &str, object: Value) {
        let mut object = object;
        self.stamp(&mut object, true);
        let meta = &object["metadata"];
        let k = key(
            meta["namespace"].as_str().unwrap_or("default"),
            plural,
            meta["name"].as_str().unwrap_or_default(),
        );
        self.objects.lock().unwrap().insert(k, object);
    }

    pub fn get(&self, namespace: &str, plural: &str, name: &str) -> Option<Value> {
        self.objects
            .lock()
            .unwrap()
            .get(&key(namespace, plural, name))
            .cloned()
    }

    /// Changes a stored object in place (a user's edit), bumping its generation.
    pub fn edit(&self, namespace: &str, plural: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let mut objects = self.objects.lock().unwrap();
        let object = objects
            .get_mut(&key(namespace, plural, name))
            .expect("object to edit");
        f(object);
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
        object["metadata"]["generation"] = json!(generation + 1);
    }

    pub fn list(&self, namespace: &str, plural: &str) -> Vec<Value> {
        let prefix = format!("{namespace}/{plural}/");
        self.objects
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every request as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// The reasons of the events recorded in `namespace`, once per occurrence (a repeated event
    /// is one object whose series counts the occurrences).
    pub fn event_reasons(&self, namespace: &str) -> Vec<String> {
        self.list(namespace, "events")
            .iter()
            .flat_map(|e| {
                let count = e["series"]["count"].as_u64().unwrap_or(1) as usize;
                let reason = e["reason"].as_str().unwrap_or_default().to_string();
                std::iter::repeat_n(reason, count)
            })
            .collect()
    }

    fn stamp(&self, object: &mut Value, new: bool) {
        let mut version = self.version.lock().unwrap();
        *version += 1;
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(version.to_string());
        if new {
            if meta["uid"].is_null() {
                meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", *version));
            }
            if meta["generation"].is_null() {
                meta["generation"] = json!(1);
            }
            if meta["creationTimestamp"].is_null() {
                meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
        }
    }

    fn handle(&self, parts: &http::request::Parts, body: &[u8]) -> (StatusCode, Value) {
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default().to_string();
        self.requests
            .lock()
            .unwrap()
            .push(format!("{} {path}?{query}", parts.method));
        let Some(target) = parse_path(&path) else {
            return (
                StatusCode::NOT_FOUND,
                status_body(StatusCode::NOT_FOUND, "NotFound", &path),
            );
        };
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut objects = self.objects.lock().unwrap();
        let not_found = || {
            (
                StatusCode::NOT_FOUND,
                status_body(StatusCode::NOT_FOUND, "NotFound", &path),
            )
        };
        match (&parts.method, &target.name) {
            (&Method::GET, None) => {
                let selector = query_param(&query, "labelSelector").unwrap_or_default();
                let prefix = format!("{}/{}/", target.namespace, target.plural);
                let items: Vec<Value> = objects
                    .iter()
                    .filter(|(k, v)| k.starts_with(&prefix) && matches_selector(v, &selector))
                    .map(|(_, v)| v.clone())
                    .collect();
                (
                    StatusCode::OK,
                    json!({"kind": "List", "apiVersion": "v1",
                           "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            (&Method::GET, Some(name)) => {
                match objects.get(&key(&target.namespace, &target.plural, name)) {
                    Some(v) => (StatusCode::OK, v.clone()),
                    None => not_found(),
                }
            }
            (&Method::POST, _) => {
                let mut object = body;
                let name = object["metadata"]["name"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| {
                        let generated = format!(
                            "{}{}",
                            object["metadata"]["generateName"]
                                .as_str()
                                .unwrap_or("obj-"),
                            objects.len()
                        );
                        object["metadata"]["name"] = json!(generated);
                        generated
                    });
                object["metadata"]["namespace"] = json!(target.namespace);
                let k = key(&target.namespace, &target.plural, &name);
                if objects.contains_key(&k) {
                    return (
                        StatusCode::CONFLICT,
                        status_body(StatusCode::CONFLICT, "AlreadyExists", &k),
                    );
                }
                if let Some(string_data) = object.get("stringData").cloned() {
                    let engine = base64::engine::general_purpose::STANDARD;
                    for (field, value) in string_data.as_object().into_iter().flatten() {
                        object["data"][field] =
                            json!(engine.encode(value.as_str().unwrap_or_default()));
                    }
                    object.as_object_mut().map(|o| o.remove("stringData"));
                }
                drop(objects);
                self.stamp(&mut object, true);
                self.objects.lock().unwrap().insert(k, object.clone());
                (StatusCode::CREATED, object)
            }
            (&Method::PATCH, Some(name)) => {
                let k = key(&target.namespace, &target.plural, name);
                let existing = objects.get(&k).cloned();
                let patched = if content_type.contains("apply-patch") {
                    match (existing, target.status) {
                        (None, true) => return not_found(),
                        (None, false) => {
                            let mut object = body.clone();
                            object["metadata"]["namespace"] = json!(target.namespace);
                            object
                        }
                        (Some(mut object), true) => {
                            object["status"] = body["status"].clone();
                            object
                        }
                        (Some(mut object), false) => {
                            let mut update = body.clone();
                            update.as_object_mut().map(|o| o.remove("status"));
                            merge(&mut object, &update);
                            object
                        }
                    }
                } else if content_type.contains("json-patch") {
                    let Some(mut object) = existing else {
                        return not_found();
                    };
                    let patch: json_patch::Patch = match serde_json::from_value(body) {
                        Ok(p) => p,
                        Err(e) => {
                            return (
                                StatusCode::BAD_REQUEST,
                                status_body(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
                            )
                        }
                    };
                    // Like the API server, a test for null passes on a field that is absent.
                    if object["metadata"].get("finalizers").is_none() {
                        object["metadata"]["finalizers"] = Value::Null;
                    }
                    let result = json_patch::patch(&mut object, &patch);
                    if object["metadata"]["finalizers"].is_null() {
                        object["metadata"]
                            .as_object_mut()
                            .map(|m| m.remove("finalizers"));
                    }
                    if let Err(e) = result {
                        return (
                            StatusCode::UNPROCESSABLE_ENTITY,
                            status_body(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                "Invalid",
                                &e.to_string(),
                            ),
                        );
                    }
                    object
                } else {
                    let Some(mut object) = existing else {
                        return not_found();
                    };
                    json_patch::merge(&mut object, &body);
                    object
                };
                let mut patched = patched;
                let new = !objects.contains_key(&k);
                // An object being deleted goes once its last finalizer is removed.
                let finalizers_left = patched["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty());
                if !patched["metadata"]["deletionTimestamp"].is_null() && !finalizers_left {
                    objects.remove(&k);
                    return (StatusCode::OK, patched);
                }
                drop(objects);
                self.stamp(&mut patched, new);
                self.objects.lock().unwrap().insert(k, patched.clone());
                (StatusCode::OK, patched)
            }
            (&Method::DELETE, Some(name)) => {
                let k = key(&target.namespace, &target.plural, name);
                let Some(mut object) = objects.get(&k).cloned() else {
                    return not_found();
                };
                let has_finalizers = object["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty());
                if has_finalizers {
                    object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:01Z");
                    objects.insert(k, object.clone());
                } else {
                    objects.remove(&k);
                }
                (StatusCode::OK, object)
            }
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                status_body(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", &path),
            ),
        }
    }
}
