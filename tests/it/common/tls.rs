//! A throw-away PKI for the TLS tests, generated at test time with rcgen:
//! a CA, a server certificate for 127.0.0.1/localhost and a client
//! certificate, written as PEM files; plus the matching etcd and etcdctl flags.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::etcd::{Etcd, wait_for};

/// PEM files of one CA and the server and client certificates it signed.
pub struct Pki {
    /// Holds every file (kept alive as long as the `Pki`).
    pub dir: tempfile::TempDir,
}

impl Pki {
    /// Generates a CA named `name`, `server.pem`/`server-key.pem` (SANs
    /// 127.0.0.1, localhost; server auth) and `client.pem`/`client-key.pem`
    /// (client auth), all signed by the CA, plus `ca.pem`.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |file: &str, text: String| {
            std::fs::write(dir.path().join(file), text).expect("write pem");
        };

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("ca key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca cert");
        write("ca.pem", ca.pem());

        let leaf = |cn: &str, sans: &[&str], eku: ExtendedKeyUsagePurpose, file: &str| {
            let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
            let mut p = CertificateParams::new(sans).expect("leaf params");
            p.distinguished_name.push(DnType::CommonName, cn);
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            p.extended_key_usages = vec![eku];
            p.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().expect("leaf key");
            let cert = p.signed_by(&key, &ca).expect("sign leaf");
            write(&format!("{file}.pem"), cert.pem());
            write(&format!("{file}-key.pem"), key.serialize_pem());
        };
        leaf(
            "127.0.0.1",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        );
        leaf(
            "liveconf",
            &["liveconf"],
            ExtendedKeyUsagePurpose::ClientAuth,
            "client",
        );
        Pki { dir }
    }

    /// A file of this PKI (`ca.pem`, `server.pem`, `client-key.pem`, ...).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// [`Pki::path`] as a string, for command lines.
    pub fn file(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }

    /// etcd flags for an https client URL that requires client certificates
    /// signed by this CA (each flag one argument, so the harness sees `--cert-file`).
    pub fn etcd_flags(&self) -> Vec<String> {
        vec![
            format!("--cert-file={}", self.file("server.pem")),
            format!("--key-file={}", self.file("server-key.pem")),
            "--client-cert-auth".to_string(),
            format!("--trusted-ca-file={}", self.file("ca.pem")),
        ]
    }

    /// etcdctl flags that trust this CA and present the client certificate.
    pub fn ctl_flags(&self) -> Vec<String> {
        vec![
            format!("--cacert={}", self.file("ca.pem")),
            format!("--cert={}", self.file("client.pem")),
            format!("--key={}", self.file("client-key.pem")),
        ]
    }

    /// liveconf flags (`--ca-file --cert-file --key-file`) for this PKI's client.
    pub fn liveconf_flags(&self) -> Vec<String> {
        vec![
            "--ca-file".to_string(),
            self.file("ca.pem"),
            "--cert-file".to_string(),
            self.file("client.pem"),
            "--key-file".to_string(),
            self.file("client-key.pem"),
        ]
    }

    /// `etcdctl ARGS` over TLS against `endpoint` (an https URL); returns
    /// stdout, panics on failure.
    pub fn ctl(&self, etcd: &Etcd, endpoint: &str, args: &[&str]) -> String {
        let flags = self.ctl_flags();
        let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        etcd.ctl_at(endpoint, &all)
    }

    /// Waits until the TLS etcd at `endpoint` answers a health check (the
    /// harness cannot: its health check speaks plain http without certificates).
    pub fn wait_healthy(&self, endpoint: &str) {
        wait_for(
            &format!("etcd {endpoint} healthy over TLS"),
            Duration::from_secs(30),
            || {
                Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .arg("--endpoints")
                    .arg(endpoint)
                    .arg("--command-timeout=2s")
                    .args(self.ctl_flags())
                    .args(["endpoint", "health"])
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false)
            },
        );
    }
}

/// The https client URL of `etcd`'s first member (the harness's
/// `Member::url()` always says http).
pub fn https_url(etcd: &Etcd) -> String {
    format!("https://127.0.0.1:{}", etcd.members[0].client_port)
}
