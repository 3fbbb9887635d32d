//! Start-up mistakes an operator makes, run with the real binary: the error names the setting
//! and says what to do, on one line, each cause once.

use std::process::Command;

crate::on_both_backends!(a_port_in_use_and_a_client_ca_that_is_no_ca_are_named_at_start);

/// Runs `serve` on `config` and returns its error output; the start must fail.
fn refused(config: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "off")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the start must fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "one line, no backtrace: {err}");
    err
}

async fn a_port_in_use_and_a_client_ca_that_is_no_ca_are_named_at_start() {
    let files = crate::durability::BinaryFiles::new();
    let text = std::fs::read_to_string(&files.config).unwrap();
    // Another process holds the port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let busy = files.pki.join("busy.toml");
    std::fs::write(
        &busy,
        text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        ),
    )
    .unwrap();
    let err = refused(&busy);
    assert!(
        err.contains(&format!("listen = \"127.0.0.1:{port}\": cannot bind it"))
            && err.contains("another process listens there"),
        "{err}"
    );
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    drop(taken);
    // The client CA is a leaf certificate: every client would be refused at the handshake.
    let leaf = files.pki.join("leaf-ca.toml");
    std::fs::write(
        &leaf,
        text.replace("client_ca = \"ca.pem\"", "client_ca = \"server.pem\""),
    )
    .unwrap();
    let err = refused(&leaf);
    assert!(
        err.contains("tls.client_ca") && err.contains("is not a CA certificate"),
        "{err}"
    );
}
