//! Property tests: arbitrary bodies and headers on every route never produce a 5xx, a panic or
//! a non-JSON error.

use super::common::*;
use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use serde_json::{Value, json};

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/admin/v1/api_token/get_access_token"),
    ("POST", "/api/admin/v1/api_token/get_user_token"),
    ("POST", "/api/admin/v1/get_datasource_token"),
    ("POST", "/api/v1/guest-token/create"),
    ("POST", "/token"),
    ("POST", "/token/refresh"),
    ("POST", "/ds-api/user-token"),
    ("GET", "/ds-api/user-token?token=abc"),
    ("GET", "/ds-api/user-token"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("PUT", "/token"),
    ("GET", "/x"),
];

const FIELDS: &[&str] = &[
    "data_source",
    "expiration",
    "app_uuid",
    "filter",
    "workspaceName",
    "clientId",
    "params",
    "expiryTime",
    "datasourceName",
    "dashboardAppFilters",
    "appFilters",
    "rlsSettings",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            Just("Data_3_E".to_owned()),
            Just("w1".to_owned()),
            ".{0,40}".prop_map(String::from)
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        // Mostly well-formed requests with one odd field.
        (prop::sample::select(FIELDS), json_value()).prop_map(|(k, v)| {
            let mut base =
                json!({"data_source": "Data_3_E", "workspaceName": "w1", "clientId": "a"});
            base[k] = v;
            base.to_string().into_bytes()
        }),
    ]
}

fn authorization() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        Just(Some(bearer(KEY_A).into_bytes())),
        Just(Some(format!("Basic {KEY_A}").into_bytes())),
        Just(Some(basic("jcw", KEY_A).into_bytes())),
        "[ -~]{0,80}".prop_map(|s| Some(s.into_bytes())),
        "(Bearer|Basic|bearer) [ -~]{0,80}".prop_map(|s| Some(s.into_bytes())),
        // Obsolete-text bytes are legal in header values and not UTF-8.
        prop::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff], 0..64).prop_map(Some),
    ]
}

fn header_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(
        &[
            "content-type",
            "content-encoding",
            "accept",
            "x-forwarded-for",
            "transfer-encoding-x",
            "cookie",
        ][..],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_input_yields_a_server_error(
        route in prop::sample::select(ROUTES),
        auth in authorization(),
        body in body(),
        extra in prop::collection::vec((header_name(), "[ -~]{0,40}"), 0..3),
    ) {
        let t = app();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut request = Request::builder().method(route.0).uri(route.1);
        if let Some(auth) = &auth {
            request = request.header("authorization", auth.as_slice());
        }
        for (name, value) in &extra {
            request = request.header(*name, value.as_str());
        }
        let reply = rt.block_on(send(&t.router, request.body(Body::from(body)).unwrap()));
        prop_assert!(reply.status.as_u16() < 500, "{} {} -> {}: {}", route.0, route.1, reply.status, reply.text);
        if !reply.status.is_success() {
            prop_assert!(reply.json["error"]["code"].is_string(), "{}", reply.text);
        }
    }
}
