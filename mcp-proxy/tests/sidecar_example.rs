//! The Kubernetes sidecar example must stay runnable: its proxy container's
//! arguments parse as `aforo mcp-proxy` arguments, and the Service sends
//! traffic to the proxy, not around it.

use aforo_mcp_proxy::ProxyArgs;
use clap::Parser;
use serde_json::Value;

#[derive(Parser)]
struct Aforo {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    McpProxy(ProxyArgs),
}

fn documents() -> Vec<Value> {
    let text = include_str!("../deploy/sidecar.yaml");
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .collect()
}

#[test]
fn the_sidecar_example_parses() {
    let docs = documents();
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    let proxy = containers
        .iter()
        .find(|c| c["name"] == "aforo-mcp-proxy")
        .expect("the proxy container");
    let args: Vec<&str> = proxy["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("a string"))
        .collect();
    let parsed = Aforo::try_parse_from(std::iter::once("aforo").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("the example's arguments parse: {e}"));
    let Command::McpProxy(parsed) = parsed.command;
    let listen = parsed.listen.expect("HTTP mode");
    assert_eq!(parsed.upstream.as_deref(), Some("http://127.0.0.1:8000"));

    // The Service's targetPort is the proxy's port, by name.
    let service = docs
        .iter()
        .find(|d| d["kind"] == "Service")
        .expect("a Service");
    let target = service["spec"]["ports"][0]["targetPort"]
        .as_str()
        .expect("a named port");
    let port = proxy["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == target)
        .expect("the Service targets a port of the proxy");
    assert_eq!(
        port["containerPort"].as_u64(),
        Some(u64::from(listen.port()))
    );
}
