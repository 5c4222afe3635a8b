//! The Redfish service over real HTTPS, as curl-like clients see it:
//! protocol rules, errors from the Base registry, sessions, accounts,
//! privileges, lockout, persistence across a crash.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{Value, json};
use shoal_tests::Appliance;

struct Redfish {
    appliance: Appliance,
    base: String,
    client: Client,
    password: String,
}

impl Redfish {
    fn start() -> Self {
        let appliance = Appliance::start_ready(1);
        let base = appliance.redfish_base();
        let password = appliance.admin_password();
        let client = Client::builder()
            // The appliance's certificate is self-signed on first start.
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            appliance,
            base,
            client,
            password,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn admin(&self, request: RequestBuilder) -> RequestBuilder {
        request.basic_auth("admin", Some(&self.password))
    }

    fn get(&self, path: &str) -> Response {
        self.admin(self.client.get(self.url(path))).send().unwrap()
    }
}

fn message_id(body: &Value) -> String {
    body["error"]["@Message.ExtendedInfo"][0]["MessageId"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn error_of(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().unwrap();
    (status, message_id(&body))
}

#[test]
fn open_documents_protocol_headers_and_the_redirect() {
    let r = Redfish::start();
    let versions: Value = r
        .client
        .get(r.url("/redfish"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(versions, json!({"v1": "/redfish/v1/"}));
    for path in ["/redfish/v1", "/redfish/v1/"] {
        let response = r.client.get(r.url(path)).send().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["odata-version"], "4.0");
        assert!(response.headers().contains_key("etag"));
        let root: Value = response.json().unwrap();
        assert_eq!(root["@odata.id"], "/redfish/v1");
        assert!(root["UUID"].as_str().unwrap().len() == 36);
    }
    let metadata = r.client.get(r.url("/redfish/v1/$metadata")).send().unwrap();
    assert_eq!(metadata.headers()["content-type"], "application/xml");
    let xml = metadata.text().unwrap();
    assert!(xml.contains("/redfish/v1/schemas/ServiceRoot_v1.xml"));
    // Every CSDL the metadata references is served.
    for uri in xml
        .split("Uri=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
    {
        let status = r.client.get(r.url(uri)).send().unwrap().status();
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
    let odata: Value = r
        .client
        .get(r.url("/redfish/v1/odata"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(odata["value"].as_array().unwrap().len() > 3);

    // Everything else needs credentials.
    let denied = r.client.get(r.url("/redfish/v1/Systems")).send().unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    assert!(
        denied.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(error_of(denied).1, "Base.1.22.NoValidSession");

    // Plain HTTP only redirects.
    let config = r.appliance.rpc("appliance_get_config", None).unwrap();
    let http = config["management"]["http_redirect_listen"]
        .as_str()
        .unwrap();
    let redirect = r
        .client
        .get(format!("http://{http}/redfish/v1/Systems?x=1"))
        .send()
        .unwrap();
    assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
    // To the appliance's host name (management.host_name, by default the
    // machine's), on the HTTPS port.
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let port = r.base.rsplit(':').next().unwrap();
    assert_eq!(
        redirect.headers()["location"],
        format!("https://{host}:{port}/redfish/v1/Systems?x=1").as_str()
    );
}

#[test]
fn base_resources_report_the_running_appliance() {
    let r = Redfish::start();
    let system: Value = r.get("/redfish/v1/Systems/appliance").json().unwrap();
    assert_eq!(system["Status"]["Health"], "OK");
    assert_eq!(
        system["Description"],
        "Storage appliance: a control cluster and 1 data clusters"
    );
    let manager: Value = r.get("/redfish/v1/Managers/bmc").json().unwrap();
    assert_eq!(manager["FirmwareVersion"], env!("CARGO_PKG_VERSION"));
    let chassis = r.get("/redfish/v1/Chassis/appliance");
    assert_eq!(chassis.status(), StatusCode::OK);
    let missing = r.get("/redfish/v1/Chassis/nope");
    assert_eq!(
        error_of(missing),
        (StatusCode::NOT_FOUND, "Base.1.22.ResourceNotFound".into())
    );
    let registry = r.get("/redfish/v1/Registries/Base.1.22.1/Base.1.22.1.json");
    let registry: Value = registry.json().unwrap();
    assert_eq!(registry["RegistryPrefix"], "Base");
    let schemas: Value = r.get("/redfish/v1/JsonSchemas").json().unwrap();
    assert!(schemas["Members@odata.count"].as_u64().unwrap() > 20);
    let file = r.get("/redfish/v1/JsonSchemas/ServiceRoot/ServiceRoot.json");
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(
        r.get("/redfish/v1/JsonSchemas/..%2Fetc/x").status(),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn sessions_log_in_and_out() {
    let r = Redfish::start();
    let sessions = r.url("/redfish/v1/SessionService/Sessions");
    let login = r
        .client
        .post(&sessions)
        .json(&json!({"UserName": "admin", "Password": r.password}))
        .send()
        .unwrap();
    assert_eq!(login.status(), StatusCode::CREATED);
    let token = login.headers()["x-auth-token"]
        .to_str()
        .unwrap()
        .to_string();
    let location = login.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/redfish/v1/SessionService/Sessions/"));
    let with_token = |path: &str| {
        r.client
            .get(r.url(path))
            .header("X-Auth-Token", &token)
            .send()
            .unwrap()
    };
    assert_eq!(with_token("/redfish/v1/Systems").status(), StatusCode::OK);
    let session: Value = with_token(&location).json().unwrap();
    assert_eq!(session["UserName"], "admin");
    let logout = r
        .client
        .delete(r.url(&location))
        .header("X-Auth-Token", &token)
        .send()
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        with_token("/redfish/v1/Systems").status(),
        StatusCode::UNAUTHORIZED
    );

    let refused = r
        .client
        .post(&sessions)
        .json(&json!({"UserName": "admin", "Password": "wrong password"}))
        .send()
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let incomplete = r
        .client
        .post(&sessions)
        .json(&json!({"UserName": "admin"}))
        .send()
        .unwrap();
    assert_eq!(
        error_of(incomplete),
        (StatusCode::BAD_REQUEST, "Base.1.22.PropertyMissing".into())
    );
}

#[test]
fn roles_limit_what_accounts_may_do() {
    let r = Redfish::start();
    let accounts = r.url("/redfish/v1/AccountService/Accounts");
    let created = r
        .admin(r.client.post(&accounts))
        .json(&json!({"UserName": "viewer", "Password": "viewer-pass-1", "RoleId": "ReadOnly"}))
        .send()
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_string();
    let viewer = |request: RequestBuilder, password: &str| {
        request.basic_auth("viewer", Some(password)).send().unwrap()
    };
    assert_eq!(
        viewer(
            r.client.get(r.url("/redfish/v1/Systems/appliance")),
            "viewer-pass-1"
        )
        .status(),
        StatusCode::OK
    );
    // ReadOnly cannot change the service nor see other accounts...
    let patch = viewer(
        r.client
            .patch(r.url("/redfish/v1/AccountService"))
            .json(&json!({"AccountLockoutThreshold": 9})),
        "viewer-pass-1",
    );
    assert_eq!(
        error_of(patch),
        (
            StatusCode::FORBIDDEN,
            "Base.1.22.InsufficientPrivilege".into()
        )
    );
    assert_eq!(
        viewer(
            r.client.get(r.url("/redfish/v1/AccountService/Accounts/1")),
            "viewer-pass-1"
        )
        .status(),
        StatusCode::FORBIDDEN
    );
    // ...nor raise its own role, but may change its own password.
    let promote = viewer(
        r.client
            .patch(r.url(&location))
            .json(&json!({"RoleId": "Administrator"})),
        "viewer-pass-1",
    );
    assert_eq!(promote.status(), StatusCode::FORBIDDEN);
    let change = viewer(
        r.client
            .patch(r.url(&location))
            .json(&json!({"Password": "viewer-pass-2"})),
        "viewer-pass-1",
    );
    assert_eq!(change.status(), StatusCode::OK);
    assert_eq!(
        viewer(r.client.get(r.url(&location)), "viewer-pass-2").status(),
        StatusCode::OK
    );
    // Duplicate names and unknown roles are refused with registry messages.
    let duplicate = r
        .admin(r.client.post(&accounts))
        .json(&json!({"UserName": "viewer", "Password": "whatever-1", "RoleId": "ReadOnly"}))
        .send()
        .unwrap();
    assert_eq!(
        error_of(duplicate),
        (
            StatusCode::CONFLICT,
            "Base.1.22.ResourceAlreadyExists".into()
        )
    );
    let bad_role = r
        .admin(r.client.post(&accounts))
        .json(&json!({"UserName": "x", "Password": "whatever-1", "RoleId": "Root"}))
        .send()
        .unwrap();
    assert_eq!(
        error_of(bad_role),
        (
            StatusCode::BAD_REQUEST,
            "Base.1.22.PropertyValueNotInList".into()
        )
    );
}

#[test]
fn repeated_failures_lock_an_account_out() {
    let r = Redfish::start();
    let policy = r
        .admin(r.client.patch(r.url("/redfish/v1/AccountService")))
        .json(&json!({"AccountLockoutThreshold": 2, "AccountLockoutDuration": 600}))
        .send()
        .unwrap();
    assert_eq!(policy.status(), StatusCode::OK);
    r.admin(r.client.post(r.url("/redfish/v1/AccountService/Accounts")))
        .json(&json!({"UserName": "op", "Password": "operator-1", "RoleId": "Operator"}))
        .send()
        .unwrap();
    let try_login = |password: &str| {
        r.client
            .get(r.url("/redfish/v1/Systems"))
            .basic_auth("op", Some(password))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(try_login("operator-1"), StatusCode::OK);
    assert_eq!(try_login("nope"), StatusCode::UNAUTHORIZED);
    assert_eq!(try_login("nope"), StatusCode::UNAUTHORIZED);
    assert_eq!(
        try_login("operator-1"),
        StatusCode::UNAUTHORIZED,
        "locked out"
    );
    let account: Value = r
        .get("/redfish/v1/AccountService/Accounts/2")
        .json()
        .unwrap();
    assert_eq!(account["Locked"], true);
    let unlock = r
        .admin(
            r.client
                .patch(r.url("/redfish/v1/AccountService/Accounts/2")),
        )
        .json(&json!({"Locked": false}))
        .send()
        .unwrap();
    assert_eq!(unlock.status(), StatusCode::OK);
    assert_eq!(try_login("operator-1"), StatusCode::OK);
}

#[test]
fn a_password_change_required_account_may_only_change_its_password() {
    let r = Redfish::start();
    r.admin(r.client.post(r.url("/redfish/v1/AccountService/Accounts")))
        .json(&json!({"UserName": "new", "Password": "first-pass", "RoleId": "Operator", "PasswordChangeRequired": true}))
        .send()
        .unwrap();
    let as_new = |request: RequestBuilder, password: &str| {
        request.basic_auth("new", Some(password)).send().unwrap()
    };
    let blocked = as_new(r.client.get(r.url("/redfish/v1/Systems")), "first-pass");
    assert_eq!(
        error_of(blocked),
        (
            StatusCode::FORBIDDEN,
            "Base.1.22.PasswordChangeRequired".into()
        )
    );
    let changed = as_new(
        r.client
            .patch(r.url("/redfish/v1/AccountService/Accounts/2"))
            .json(&json!({"Password": "second-pass"})),
        "first-pass",
    );
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(
        as_new(r.client.get(r.url("/redfish/v1/Systems")), "second-pass").status(),
        StatusCode::OK
    );
}

#[test]
fn bad_requests_get_registry_errors_and_the_service_stays_up() {
    let r = Redfish::start();
    let patch = |body: Vec<u8>| {
        r.admin(r.client.patch(r.url("/redfish/v1/AccountService")))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap()
    };
    assert_eq!(
        error_of(patch(b"{not json".to_vec())),
        (StatusCode::BAD_REQUEST, "Base.1.22.MalformedJSON".into())
    );
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(patch(deep.into_bytes()).status(), StatusCode::BAD_REQUEST);
    let huge = vec![b' '; 2 << 20];
    assert_eq!(
        error_of(patch(huge)),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Base.1.22.PayloadTooLarge".into()
        )
    );
    assert_eq!(
        error_of(patch(br#"{"Id": "x"}"#.to_vec())),
        (
            StatusCode::BAD_REQUEST,
            "Base.1.22.PropertyNotWritable".into()
        )
    );
    assert_eq!(
        error_of(patch(br#"{"Bogus": 1}"#.to_vec())),
        (StatusCode::BAD_REQUEST, "Base.1.22.PropertyUnknown".into())
    );
    assert_eq!(
        error_of(patch(br#"{"@odata.id": "x"}"#.to_vec())),
        (StatusCode::BAD_REQUEST, "Base.1.22.NoOperation".into())
    );
    // One good and one bad property: applied, 200 with the message.
    let partial = patch(br#"{"AccountLockoutDuration": 30, "Bogus": 1}"#.to_vec());
    assert_eq!(partial.status(), StatusCode::OK);
    let partial: Value = partial.json().unwrap();
    assert_eq!(partial["AccountLockoutDuration"], 30, "applied and shown");
    assert_eq!(
        partial["@Message.ExtendedInfo"][0]["MessageId"],
        "Base.1.22.PropertyUnknown"
    );

    let unsupported = r.get("/redfish/v1/Systems?excerpt");
    assert_eq!(
        error_of(unsupported),
        (
            StatusCode::NOT_IMPLEMENTED,
            "Base.1.22.QueryParameterUnsupported".into()
        )
    );
    let version = r
        .admin(r.client.get(r.url("/redfish/v1/Systems")))
        .header("OData-Version", "5.0")
        .send()
        .unwrap();
    assert_eq!(version.status(), StatusCode::PRECONDITION_FAILED);
    let not_allowed = r
        .admin(r.client.delete(r.url("/redfish/v1/Systems/appliance")))
        .send()
        .unwrap();
    assert_eq!(not_allowed.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        not_allowed.headers()["allow"]
            .to_str()
            .unwrap()
            .contains("GET")
    );
    assert_eq!(error_of(not_allowed).1, "Base.1.22.OperationNotAllowed");

    // ETags: If-None-Match → 304, a stale If-Match → 412.
    let account = r.get("/redfish/v1/AccountService/Accounts/1");
    let etag = account.headers()["etag"].to_str().unwrap().to_string();
    let cached = r
        .admin(r.client.get(r.url("/redfish/v1/AccountService/Accounts/1")))
        .header("If-None-Match", &etag)
        .send()
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    let stale = r
        .admin(
            r.client
                .patch(r.url("/redfish/v1/AccountService/Accounts/1")),
        )
        .header("If-Match", "\"0000000000000000\"")
        .json(&json!({"Enabled": true}))
        .send()
        .unwrap();
    assert_eq!(
        error_of(stale),
        (
            StatusCode::PRECONDITION_FAILED,
            "Base.1.22.PreconditionFailed".into()
        )
    );
    assert_eq!(
        r.get("/redfish/v1").status(),
        StatusCode::OK,
        "still serving"
    );
}

#[test]
fn a_refused_request_with_a_body_leaves_the_connection_usable() {
    let r = Redfish::start();
    // One connection, reused for every request.
    let client = Client::builder()
        .danger_accept_invalid_certs(true)
        .pool_max_idle_per_host(1)
        .http1_only()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // Within what an unauthenticated caller may send (4 KiB): read, then
    // refused, and the connection stays.
    let body = serde_json::to_vec(&json!({"Description": "x".repeat(2 << 10)})).unwrap();
    for _ in 0..20 {
        // Refused before any handler reads the body (no credentials)...
        let refused = client
            .patch(r.url("/redfish/v1/AccountService"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        // ...and the next request on the same connection still works.
        let root = client.get(r.url("/redfish/v1")).send().unwrap();
        assert_eq!(root.status(), StatusCode::OK);
    }
    // Beyond it: not read, 413 (or the connection closed under the
    // unfinished upload), and the next request still answered.
    let big = serde_json::to_vec(&json!({"Description": "x".repeat(256 << 10)})).unwrap();
    for _ in 0..5 {
        let refused = client
            .patch(r.url("/redfish/v1/AccountService"))
            .header("content-type", "application/json")
            .body(big.clone())
            .send();
        if let Ok(refused) = refused {
            assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
        }
        let root = client.get(r.url("/redfish/v1")).send().unwrap();
        assert_eq!(root.status(), StatusCode::OK);
    }
}

#[test]
fn accounts_survive_a_crash_of_the_service() {
    let r = Redfish::start();
    let created = r
        .admin(r.client.post(r.url("/redfish/v1/AccountService/Accounts")))
        .json(&json!({"UserName": "durable", "Password": "durable-1", "RoleId": "ReadOnly"}))
        .send()
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let root: Value = r
        .client
        .get(r.url("/redfish/v1"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let management = r.appliance.status()["management"].clone();
    let pid = management["pid"].as_i64().unwrap() as i32;
    let restarts = management["restarts"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    r.appliance
        .wait_for("management restarted", shoal_tests::STARTUP_TIMEOUT, |s| {
            s["management"]["state"] == "running"
                && s["management"]["restarts"].as_u64() > Some(restarts)
        });
    let again = r
        .client
        .get(r.url("/redfish/v1/Systems"))
        .basic_auth("durable", Some("durable-1"))
        .send()
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let root_again: Value = r
        .client
        .get(r.url("/redfish/v1"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        root["UUID"], root_again["UUID"],
        "ServiceRoot UUID is stable"
    );
}

#[test]
fn query_parameters_select_expand_page_and_filter() {
    let r = Redfish::start();
    let json = |path: &str| -> Value {
        let response = r.get(path);
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().unwrap()
    };
    let root = json("/redfish/v1");
    assert_eq!(root["ProtocolFeaturesSupported"]["SelectQuery"], true);

    let selected = json("/redfish/v1/Systems/appliance?$select=Name,Status/Health");
    assert_eq!(selected["Name"], "Shoal appliance");
    assert_eq!(selected["Status"], json!({"Health": "OK"}));
    assert!(selected.get("Model").is_none());
    assert_eq!(selected["@odata.id"], "/redfish/v1/Systems/appliance");

    let expanded = json("/redfish/v1/AccountService/Roles?$expand=.");
    let members = expanded["Members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["AssignedPrivileges"].is_array()));
    // Two levels: the service root's subordinates and theirs.
    let deep = json("/redfish/v1/AccountService?$expand=.($levels=2)");
    assert!(deep["Roles"]["Members"][0]["RoleId"].is_string(), "{deep}");
    // ~ follows Links only.
    let linked = json("/redfish/v1/Systems/appliance?$expand=~");
    assert_eq!(linked["Links"]["Chassis"][0]["Id"], "appliance");

    let page = json("/redfish/v1/AccountService/Roles?$top=1&$skip=1");
    assert_eq!(page["Members"].as_array().unwrap().len(), 1);
    assert_eq!(page["Members@odata.count"], 3);
    let next = page["Members@odata.nextLink"].as_str().unwrap().to_string();
    let last = json(&next);
    assert_eq!(
        last["Members"][0]["@odata.id"],
        "/redfish/v1/AccountService/Roles/ReadOnly"
    );
    assert!(last.get("Members@odata.nextLink").is_none());

    let filtered = json(
        "/redfish/v1/AccountService/Roles?$filter=IsPredefined%20eq%20true%20and%20not%20(Id%20eq%20'Operator')",
    );
    let ids: Vec<&str> = filtered["Members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["@odata.id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "/redfish/v1/AccountService/Roles/Administrator",
            "/redfish/v1/AccountService/Roles/ReadOnly"
        ]
    );

    let only = json("/redfish/v1/Systems?only");
    assert_eq!(only["@odata.id"], "/redfish/v1/Systems/appliance");

    for bad in [
        "$top=x",
        "$expand=*($levels=0)",
        "$filter=Id%20eq",
        "$select=",
        "only&$top=1",
    ] {
        let response = r.get(&format!("/redfish/v1/Systems?{bad}"));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    // Expansion honours privileges: a ReadOnly account sees its own
    // account expanded (ConfigureSelf) and the administrator's left as a
    // reference.
    r.admin(r.client.post(r.url("/redfish/v1/AccountService/Accounts")))
        .json(&json!({"UserName": "ro", "Password": "read-only-1", "RoleId": "ReadOnly"}))
        .send()
        .unwrap();
    let service = r
        .client
        .get(r.url("/redfish/v1/AccountService?$expand=.($levels=2)"))
        .basic_auth("ro", Some("read-only-1"))
        .send()
        .unwrap();
    let service: Value = service.json().unwrap();
    let accounts = service["Accounts"]["Members"].as_array().unwrap();
    assert_eq!(
        accounts[0],
        json!({"@odata.id": "/redfish/v1/AccountService/Accounts/1"})
    );
    assert_eq!(accounts[1]["UserName"], "ro");
}

#[test]
fn the_openapi_document_lists_every_route_and_each_one_answers() {
    let r = Redfish::start();
    let response = r
        .client
        .get(r.url("/redfish/v1/openapi.json"))
        .send()
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "readable without credentials"
    );
    let document: Value = response.json().unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() >= 30, "{} paths", paths.len());
    let sample = |parameter: &str, path: &str| -> &'static str {
        match parameter {
            "id" if path.contains("/Accounts/") => "1",
            "id" if path.contains("/Roles/") => "ReadOnly",
            "id" if path.contains("/Managers/") => "bmc",
            "id" if path.contains("/Registries/") => "Base.1.22.1",
            "file" if path.contains("/Registries/") => "Base.1.22.1.json",
            "name" if path.contains("/JsonSchemas/") => "ServiceRoot",
            "file" if path.contains("/JsonSchemas/") => "ServiceRoot.json",
            "name" => "ServiceRoot_v1.xml",
            "drive" => "drive0",
            "id" if path.contains("/Fabrics/") => "NVMeoF",
            "id" if path.contains("/Subscriptions/") => "1",
            "id" if path.contains("/TaskService/") => "1",
            "volume" | "connection" => "1",
            "pool" => "default",
            "source" => "drive0",
            "controller" => "cluster0",
            "endpoint" => "target0",
            "group" => "targets",
            _ => "appliance",
        }
    };
    // The storage resources, a subscription and a finished task to stand
    // in for their {id}s.
    let post = |path: &str, body: Value| {
        let response = r
            .admin(r.client.post(r.url(path)))
            .json(&body)
            .send()
            .unwrap();
        let status = response.status();
        let location = response.headers()["location"].to_str().unwrap().to_string();
        assert!(status.is_success(), "POST {path}: {status}");
        location
    };
    let volume = post(
        "/redfish/v1/Storage/appliance/Volumes",
        json!({"CapacityBytes": 8 << 20}),
    );
    let host = post(
        "/redfish/v1/Fabrics/NVMeoF/Endpoints",
        json!({"Identifiers": [{"DurableNameFormat": "NQN",
            "DurableName": "nqn.2014-08.org.nvmexpress:uuid:6c2e5d1a-0f4b-4f7e-9a51-3c1d2b7e8f90"}]}),
    );
    post(
        "/redfish/v1/Fabrics/NVMeoF/Connections",
        json!({"VolumeInfo": [{"Volume": {"@odata.id": volume}}],
               "Links": {"InitiatorEndpoints": [{"@odata.id": host}]}}),
    );
    post(
        "/redfish/v1/EventService/Subscriptions",
        // A documentation address (RFC 5737): loopback ones are refused.
        json!({"Destination": "http://192.0.2.1:9/events", "Protocol": "Redfish"}),
    );
    let monitor = post(&format!("{volume}/Actions/Volume.Initialize"), json!({}));
    while r.get(&monitor).status() == StatusCode::ACCEPTED {
        std::thread::sleep(Duration::from_millis(50));
    }
    // A session to stand in for Sessions/{id}.
    let login = r
        .client
        .post(r.url("/redfish/v1/SessionService/Sessions"))
        .json(&json!({"UserName": "admin", "Password": r.password}))
        .send()
        .unwrap();
    let session = login.headers()["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    for (template, item) in paths {
        if item.get("get").is_none() {
            continue;
        }
        let uri: String = template
            .split('/')
            .map(
                |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(_) if template.contains("/Sessions/") => session.clone(),
                    Some(parameter) => sample(parameter, template).to_string(),
                    None => segment.to_string(),
                },
            )
            .collect::<Vec<_>>()
            .join("/");
        let status = r.get(&uri).status();
        assert_eq!(status, StatusCode::OK, "{template} as {uri}");
    }
}

#[test]
fn each_data_cluster_drive_is_a_drive_of_the_chassis() {
    let r = Redfish::start();
    let collection: Value = r
        .get("/redfish/v1/Chassis/appliance/Drives")
        .json()
        .unwrap();
    let members = collection["Members"].as_array().unwrap();
    assert!(!members.is_empty());
    assert_eq!(collection["Members@odata.count"], members.len());
    let chassis: Value = r.get("/redfish/v1/Chassis/appliance").json().unwrap();
    assert_eq!(
        chassis["Drives"]["@odata.id"],
        "/redfish/v1/Chassis/appliance/Drives"
    );
    let drive: Value = r
        .get("/redfish/v1/Chassis/appliance/Drives/drive0")
        .json()
        .unwrap();
    assert_eq!(drive["@odata.type"], "#Drive.v1_22_0.Drive");
    // The test appliance's drive files are 64 MiB (tests/src/lib.rs).
    assert_eq!(drive["CapacityBytes"], 64u64 << 20);
    assert_eq!(drive["BlockSizeBytes"], 512);
    assert_eq!(drive["Status"]["State"], "Enabled");
    assert!(
        drive["Description"]
            .as_str()
            .unwrap()
            .contains("drive0.img")
    );
    assert_eq!(
        r.get("/redfish/v1/Chassis/appliance/Drives/drive99")
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        r.get("/redfish/v1/Chassis/other/Drives").status(),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn collection_query_options_on_a_single_resource_are_refused() {
    let r = Redfish::start();
    // DSP0266: `only`, `$top`, `$skip` (and `$filter`) apply to
    // collections; a singleton answers QueryNotSupportedOnResource.
    for query in [
        "only",
        "$top=1",
        "$skip=1",
        "$skip=0&$top=5",
        "$filter=Id%20eq%20'x'",
    ] {
        for path in [
            "/redfish/v1/Systems/appliance",
            "/redfish/v1/AccountService",
        ] {
            let uri = format!("{path}?{query}");
            assert_eq!(
                error_of(r.get(&uri)),
                (
                    StatusCode::BAD_REQUEST,
                    "Base.1.22.QueryNotSupportedOnResource".into()
                ),
                "{uri}"
            );
        }
    }
    // On the open service root too.
    let root = r.client.get(r.url("/redfish/v1?only")).send().unwrap();
    assert_eq!(error_of(root).0, StatusCode::BAD_REQUEST);
    // On collections they still apply.
    let only: Value = r.get("/redfish/v1/Systems?only").json().unwrap();
    assert_eq!(only["@odata.id"], "/redfish/v1/Systems/appliance");
    let page: Value = r
        .get("/redfish/v1/AccountService/Roles?$top=1")
        .json()
        .unwrap();
    assert_eq!(page["Members"].as_array().unwrap().len(), 1);
    // `$select` is not collection-only.
    let selected = r.get("/redfish/v1/Systems/appliance?$select=Id");
    assert_eq!(selected.status(), StatusCode::OK);
}

/// POSTs a small volume; the status, and `Retry-After` if any.
fn create_volume(r: &Redfish, name: &str) -> (StatusCode, Option<String>, Value) {
    let response = r
        .admin(
            r.client
                .post(r.url("/redfish/v1/Storage/appliance/Volumes")),
        )
        .json(&json!({"Name": name, "CapacityBytes": 8 << 20}))
        .send()
        .unwrap();
    let status = response.status();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, response.json().unwrap_or(Value::Null))
}

#[test]
fn storage_changes_are_taken_as_soon_as_the_appliance_is_ready() {
    // Not start_ready: the test watches for readiness itself, keeping
    // the service busy reading storage meanwhile (as a dashboard would),
    // so it holds a fresh view of the clusters still starting.
    let appliance = Appliance::builder(1)
        // A restarted cluster waits a second first: long enough for the
        // service to have looked at it down more than once.
        .set("supervisor.restart_backoff_initial_ms", 1000)
        .set("supervisor.restart_backoff_max_ms", 1000)
        .start();
    let client = Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let deadline = std::time::Instant::now() + shoal_tests::STARTUP_TIMEOUT;
    let mut base = None;
    loop {
        assert!(std::time::Instant::now() < deadline, "{}", appliance.log());
        let status = appliance.rpc("appliance_get_status", None).ok();
        if status.as_ref().is_some_and(|s| s["state"] == "running") {
            break;
        }
        if base.is_none()
            && let Ok(config) = appliance.rpc("appliance_get_config", None)
        {
            base = Some(format!(
                "https://{}",
                config["management"]["https_listen"].as_str().unwrap()
            ));
        }
        let password =
            std::fs::read_to_string(appliance.state_dir.join("initial-admin-password")).ok();
        if let (Some(base), Some(password)) = (&base, password) {
            let _ = client
                .get(format!("{base}/redfish/v1/Storage/appliance"))
                .basic_auth("admin", Some(password.trim()))
                .send();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = Redfish {
        base: appliance.redfish_base(),
        password: appliance.admin_password(),
        appliance,
        client,
    };
    let (status, retry, body) = create_volume(&r, "first");
    assert_eq!(
        status,
        StatusCode::CREATED,
        "right after ready (Retry-After {retry:?}): {body}"
    );

    // The same after a data cluster restarts: refused while it is down
    // (with a Retry-After), taken as soon as it runs again, though the
    // service's cached view (STATUS_MAX_AGE) still has it down.
    let restarts = r.appliance.kill_cluster(0);
    let mut refused_while_down = None;
    loop {
        let cluster = r.appliance.cluster(0);
        if cluster["state"] == "running" && cluster["restarts"].as_u64() > Some(restarts) {
            break;
        }
        let _ = r.get("/redfish/v1/Storage/appliance");
        if refused_while_down.is_none() && cluster["state"] != "running" {
            let (status, retry, _) = create_volume(&r, "while-down");
            if status == StatusCode::SERVICE_UNAVAILABLE {
                refused_while_down = Some(retry);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, retry, body) = create_volume(&r, "after-restart");
    assert_eq!(
        status,
        StatusCode::CREATED,
        "right after the restart (Retry-After {retry:?}): {body}"
    );
    let retry = refused_while_down.expect("a change was refused while the cluster was down");
    let seconds: u64 = retry.expect("a 503 carries Retry-After").parse().unwrap();
    assert!(seconds >= 1);
}

#[test]
fn manager_identification_features_and_account_types() {
    let mut r = Redfish::start();
    let patch = |r: &Redfish, path: &str, body: Value| {
        let response = r
            .admin(r.client.patch(r.url(path)))
            .json(&body)
            .send()
            .unwrap();
        let status = response.status();
        (status, response.json::<Value>().unwrap_or(Value::Null))
    };
    const MANAGER: &str = "/redfish/v1/Managers/bmc";

    // ServiceRoot claims concurrent requests: it serves HTTP/2.
    let root: Value = r
        .client
        .get(r.url("/redfish/v1"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        root["ProtocolFeaturesSupported"]["MultipleHTTPRequests"],
        true
    );
    assert!(root.get("ServiceIdentification").is_none(), "none set yet");
    let h2 = Client::builder()
        .danger_accept_invalid_certs(true)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let over_h2 = h2.get(r.url("/redfish/v1")).send().unwrap();
    assert_eq!(over_h2.version(), reqwest::Version::HTTP_2);

    // Manager.ServiceIdentification: present, PATCHable, shown in the
    // service root, kept across a crash of the service.
    let manager: Value = r.get(MANAGER).json().unwrap();
    assert_eq!(manager["ServiceIdentification"], "");
    let (status, body) = patch(
        &r,
        MANAGER,
        json!({"ServiceIdentification": "rack 7 / shelf 2"}),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ServiceIdentification"], "rack 7 / shelf 2");
    let (status, body) = patch(&r, MANAGER, json!({"ServiceIdentification": 7}));
    assert_eq!(
        (status, message_id(&body)),
        (
            StatusCode::BAD_REQUEST,
            "Base.1.22.PropertyValueTypeError".into()
        )
    );
    let (status, body) = patch(&r, MANAGER, json!({"ManagerType": "BMC"}));
    assert_eq!(
        (status, message_id(&body)),
        (
            StatusCode::BAD_REQUEST,
            "Base.1.22.PropertyNotWritable".into()
        )
    );
    let (status, body) = patch(
        &r,
        MANAGER,
        json!({"ServiceIdentification": "x".repeat(257)}),
    );
    assert_eq!(
        (status, message_id(&body)),
        (
            StatusCode::BAD_REQUEST,
            "Base.1.22.StringValueTooLong".into()
        )
    );
    // An account without ConfigureManager may not.
    let created = r
        .admin(r.client.post(r.url("/redfish/v1/AccountService/Accounts")))
        .json(
            &json!({"UserName": "op", "Password": "operator-1", "RoleId": "Operator",
                      "AccountTypes": ["Redfish"]}),
        )
        .send()
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().unwrap();
    assert_eq!(created["AccountTypes"], json!(["Redfish"]));
    let denied = r
        .client
        .patch(r.url(MANAGER))
        .basic_auth("op", Some("operator-1"))
        .json(&json!({"ServiceIdentification": "mine"}))
        .send()
        .unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);

    let management = r.appliance.status()["management"].clone();
    let restarts = management["restarts"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(management["pid"].as_i64().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    r.appliance
        .wait_for("management restarted", shoal_tests::STARTUP_TIMEOUT, |s| {
            s["management"]["state"] == "running"
                && s["management"]["restarts"].as_u64() > Some(restarts)
        });
    r.base = r.appliance.redfish_base();
    let manager: Value = r.get(MANAGER).json().unwrap();
    assert_eq!(manager["ServiceIdentification"], "rack 7 / shelf 2");
    let root: Value = r
        .client
        .get(r.url("/redfish/v1"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(root["ServiceIdentification"], "rack 7 / shelf 2");
    let (status, _) = patch(&r, MANAGER, json!({"ServiceIdentification": null}));
    assert_eq!(status, StatusCode::OK);
    let root: Value = r
        .client
        .get(r.url("/redfish/v1"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(root.get("ServiceIdentification").is_none(), "cleared");

    // Accounts are Redfish accounts only.
    let service: Value = r.get("/redfish/v1/AccountService").json().unwrap();
    assert_eq!(service["SupportedAccountTypes"], json!(["Redfish"]));
    let plain = r
        .admin(r.client.post(r.url("/redfish/v1/AccountService/Accounts")))
        .json(&json!({"UserName": "plain", "Password": "plain-pass-1", "RoleId": "ReadOnly"}))
        .send()
        .unwrap();
    assert_eq!(plain.status(), StatusCode::CREATED);
    let plain: Value = plain.json().unwrap();
    assert_eq!(plain["AccountTypes"], json!(["Redfish"]), "the default");
    for types in [
        json!(["IPMI"]),
        json!(["Redfish", "SNMP"]),
        json!([]),
        json!("Redfish"),
    ] {
        let refused = r
            .admin(r.client.post(r.url("/redfish/v1/AccountService/Accounts")))
            .json(
                &json!({"UserName": "other", "Password": "other-pass-1", "RoleId": "ReadOnly",
                          "AccountTypes": types}),
            )
            .send()
            .unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{types}");
    }
    let account = plain["@odata.id"].as_str().unwrap();
    let (status, body) = patch(&r, account, json!({"AccountTypes": ["HostConsole"]}));
    assert_eq!(
        (status, message_id(&body)),
        (
            StatusCode::BAD_REQUEST,
            "Base.1.22.PropertyValueNotInList".into()
        )
    );
    let (status, body) = patch(&r, account, json!({"AccountTypes": ["Redfish"]}));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["AccountTypes"], json!(["Redfish"]));
}

#[test]
fn bodies_are_json_with_each_property_once() {
    let r = Redfish::start();
    let send = |method: reqwest::Method, path: &str, content_type: Option<&str>, body: &str| {
        let mut request = r.admin(r.client.request(method, r.url(path)));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        error_of(request.body(body.to_string()).send().unwrap())
    };
    let unsupported = |key: &str| {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Base.1.22.{key}"),
        )
    };
    let lockout = r#"{"AccountLockoutDuration": 40}"#;
    // Not JSON by its media type: 415, whatever the body holds.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
        "application/json; charset=latin1",
    ] {
        assert_eq!(
            send(
                reqwest::Method::PATCH,
                "/redfish/v1/AccountService",
                Some(content_type),
                lockout
            ),
            unsupported("HeaderInvalid"),
            "{content_type}"
        );
    }
    assert_eq!(
        send(
            reqwest::Method::PATCH,
            "/redfish/v1/AccountService",
            None,
            lockout
        ),
        unsupported("HeaderMissing")
    );
    assert_eq!(
        send(
            reqwest::Method::POST,
            "/redfish/v1/AccountService/Accounts",
            Some("text/json"),
            r#"{"UserName": "u", "Password": "user-pass-1", "RoleId": "ReadOnly"}"#
        ),
        unsupported("HeaderInvalid")
    );
    // A login too, before any credentials are looked at.
    let login = r
        .client
        .post(r.url("/redfish/v1/SessionService/Sessions"))
        .header("content-type", "text/plain")
        .body(format!(
            r#"{{"UserName": "admin", "Password": "{}"}}"#,
            r.password
        ))
        .send()
        .unwrap();
    assert_eq!(login.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // JSON, with or without a charset: taken.
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
    ] {
        let response = r
            .admin(r.client.patch(r.url("/redfish/v1/AccountService")))
            .header("content-type", content_type)
            .body(lockout)
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{content_type}");
    }
    // An action without a body needs no Content-Type.
    let volume = r
        .admin(
            r.client
                .post(r.url("/redfish/v1/Storage/appliance/Volumes")),
        )
        .json(&json!({"CapacityBytes": 8 << 20}))
        .send()
        .unwrap();
    assert_eq!(volume.status(), StatusCode::CREATED);
    let volume = volume.headers()["location"].to_str().unwrap().to_string();
    let initialize = r
        .admin(
            r.client
                .post(r.url(&format!("{volume}/Actions/Volume.Initialize"))),
        )
        .send()
        .unwrap();
    assert_eq!(initialize.status(), StatusCode::ACCEPTED);

    // A property twice, at any depth: MalformedJSON, nothing applied.
    let json = Some("application/json");
    for twice in [
        r#"{"AccountLockoutDuration": 50, "AccountLockoutDuration": 60}"#,
        r#"{"AccountLockoutDuration": 50, "Oem": {"A": 1, "A": 2}}"#,
        r#"{"AccountLockoutDuration": 50, "x": [{"B": 1, "B": 1}]}"#,
    ] {
        assert_eq!(
            send(
                reqwest::Method::PATCH,
                "/redfish/v1/AccountService",
                json,
                twice
            ),
            (StatusCode::BAD_REQUEST, "Base.1.22.MalformedJSON".into()),
            "{twice}"
        );
    }
    let service: Value = r.get("/redfish/v1/AccountService").json().unwrap();
    assert_eq!(service["AccountLockoutDuration"], 40, "nothing applied");
    assert_eq!(
        send(
            reqwest::Method::POST,
            "/redfish/v1/AccountService/Accounts",
            json,
            r#"{"UserName": "a", "UserName": "b", "Password": "user-pass-1", "RoleId": "ReadOnly"}"#
        ),
        (StatusCode::BAD_REQUEST, "Base.1.22.MalformedJSON".into())
    );
    assert_eq!(
        r.get("/redfish/v1/AccountService/Accounts/2").status(),
        StatusCode::NOT_FOUND
    );
}
