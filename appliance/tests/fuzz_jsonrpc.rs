//! Bounded fuzzing (proptest, run by `cargo test`) of the JSON-RPC path a
//! client controls: the stream decoder and the dispatcher. Every input gets
//! either no answer (a notification) or a well-formed JSON-RPC response;
//! nothing panics.

use proptest::prelude::*;
use serde_json::{Value, json};
use shoal_appliance::jsonrpc::framing::Decoder;
use shoal_appliance::jsonrpc::{Router, RpcError, parse_params};

fn router() -> Router {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Params {
        cluster: u32,
        name: Option<String>,
    }
    Router::new()
        .method("typed", |params| async move {
            let _: Params = parse_params(params)?;
            Ok(json!(true))
        })
        .method("fails", |_| async move {
            Err(RpcError::new(-19, "no such device"))
        })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z_]{0,12}".prop_map(Value::from),
        Just(json!("2.0")),
        Just(json!("typed")),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("jsonrpc".to_string()),
                    Just("method".to_string()),
                    Just("params".to_string()),
                    Just("id".to_string()),
                    Just("cluster".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn assert_response(reply: &Value) {
    let replies = match reply {
        Value::Array(items) => items.clone(),
        single => vec![single.clone()],
    };
    for reply in replies {
        assert_eq!(reply["jsonrpc"], "2.0", "{reply}");
        assert!(reply.get("id").is_some(), "{reply}");
        let has_result = reply.get("result").is_some();
        let error = reply.get("error");
        assert!(
            has_result != error.is_some(),
            "exactly one of result/error: {reply}"
        );
        if let Some(error) = error {
            assert!(
                error["code"].is_i64() && error["message"].is_string(),
                "{reply}"
            );
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn dispatcher_answers_any_value_correctly(value in json_value()) {
        let router = router();
        if let Some(reply) = block_on(router.handle_value(value)) {
            assert_response(&reply);
        }
    }

    #[test]
    fn requests_with_arbitrary_params_get_answers(params in json_value(), id in any::<u32>()) {
        let router = router();
        let request = json!({"jsonrpc": "2.0", "method": "typed", "params": params, "id": id});
        let reply = block_on(router.handle_value(request)).expect("a request with an id is answered");
        assert_response(&reply);
        prop_assert_eq!(&reply["id"], &json!(id));
    }

    #[test]
    fn decoder_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512), split in 0usize..512) {
        let mut decoder = Decoder::new();
        let split = split.min(bytes.len());
        decoder.push(&bytes[..split]);
        let mut results = Vec::new();
        loop {
            match decoder.next_value() {
                Ok(Some(v)) => results.push(v),
                Ok(None) => break,
                Err(_) => return Ok(()),
            }
        }
        decoder.push(&bytes[split..]);
        while let Ok(Some(v)) = decoder.next_value() {
            results.push(v);
        }
    }
}
