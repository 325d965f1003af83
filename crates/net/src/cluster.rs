//! The cluster's own certificate authority and the host identities it issues.
//!
//! A cluster directory holds `ca.crt` and `ca.key` (PEM; the key mode 0600) and the
//! deploy key pair `deploy.key` / `deploy.key.pub`. The CA and the deploy key are
//! separate on purpose: the CA decides who may join the transport, the deploy key
//! decides which releases agents install.
//!
//! A host identity is one PEM file (mode 0600): a comment line naming the host and
//! its datacenter, the host certificate, its private key, then the CA certificate.
//! The host certificate names the host as its only SAN (DNS name, or IP address when
//! the host is written as one), carries `CN=<host>, OU=<dc>, O=shoal`, and is good for
//! both server and client authentication, since every host does both.

use crate::error::{IoAt, NetError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use time::{Duration, OffsetDateTime};

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const DEPLOY_KEY: &str = "deploy.key";

/// How long the CA is valid. Long: replacing it means reissuing every host.
const CA_VALIDITY: Duration = Duration::days(20 * 365);
/// How long a host certificate is valid; reissuing one is a single command.
const HOST_VALIDITY: Duration = Duration::days(5 * 365);
/// Certificates start a day in the past so that hosts with a slow clock accept them.
const CLOCK_SLACK: Duration = Duration::days(1);
/// X.520 upper bound for an organizational unit name.
const MAX_DC_LEN: usize = 64;

/// Creates `dir` with the cluster CA (`ca.crt`, `ca.key`, mode 0600) and the deploy key
/// pair (`deploy.key`, `deploy.key.pub`). Refuses to overwrite an existing CA or key.
pub fn init(dir: &Path) -> Result<(), NetError> {
    let ca_crt = dir.join(CA_CERT);
    let ca_key = dir.join(CA_KEY);
    let deploy = dir.join(DEPLOY_KEY);
    let deploy_pub = shoal_bundle::signing::pub_path(&deploy);
    // Check everything first so that a refusal leaves the directory as it was.
    for p in [&ca_crt, &ca_key, &deploy, &deploy_pub] {
        if fs::symlink_metadata(p).is_ok() {
            return Err(NetError::Exists(p.clone()));
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .at(dir)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // A short key fingerprint in the name tells two clusters' CAs apart in logs.
    let kid = params.key_identifier(&key);
    let tag: String = kid.iter().take(6).map(|b| format!("{b:02x}")).collect();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("shoal cluster CA {tag}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "shoal");
    let now = OffsetDateTime::from(SystemTime::now());
    params.not_before = now - CLOCK_SLACK;
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key)?;

    write_new(&ca_key, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&ca_crt, cert.pem().as_bytes(), 0o644)?;
    shoal_bundle::signing::DeployKey::generate()?.save(&deploy)?;
    Ok(())
}

/// Issues an identity for `host` in datacenter `dc`, signed by the CA in `dir`, and
/// writes it to `out` (mode 0600), replacing any earlier identity there atomically.
pub fn issue(dir: &Path, host: &str, dc: &str, out: &Path) -> Result<(), NetError> {
    check_host(host)?;
    check_dc(dc)?;
    let ca_crt = dir.join(CA_CERT);
    let ca_key = dir.join(CA_KEY);
    let ca_pem = fs::read_to_string(&ca_crt).at(&ca_crt)?;
    let key_pem = fs::read_to_string(&ca_key).at(&ca_key)?;
    let ca_signing = KeyPair::from_pem(&key_pem).map_err(|e| NetError::BadFile {
        path: ca_key.clone(),
        reason: format!("not a CA private key: {e}"),
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_signing).map_err(|e| NetError::BadFile {
        path: ca_crt.clone(),
        reason: format!("not a CA certificate: {e}"),
    })?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![host.to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, host);
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, dc);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "shoal");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::from(SystemTime::now());
    params.not_before = now - CLOCK_SLACK;
    params.not_after = now + HOST_VALIDITY;
    let cert = params.signed_by(&key, &issuer)?;

    let text = format!(
        "# shoal host identity: host={host} dc={dc}\n{}{}{}",
        cert.pem(),
        key.serialize_pem(),
        ensure_newline(&ca_pem),
    );
    write_replace(out, text.as_bytes())
}

fn ensure_newline(s: &str) -> String {
    if s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

/// A host name must be something a peer can verify: a DNS name or an IP address.
pub(crate) fn check_host(host: &str) -> Result<(), NetError> {
    let bad = |reason: &str| NetError::InvalidName {
        what: "host name",
        value: host.to_string(),
        reason: reason.to_string(),
    };
    if host.is_empty() {
        return Err(bad("empty"));
    }
    // Wildcards would let one certificate stand for many hosts.
    if host.contains('*') {
        return Err(bad("wildcards are not allowed"));
    }
    rustls::pki_types::ServerName::try_from(host)
        .map(|_| ())
        .map_err(|e| bad(&format!("not a DNS name or IP address ({e})")))
}

fn check_dc(dc: &str) -> Result<(), NetError> {
    let ok = !dc.is_empty()
        && dc.len() <= MAX_DC_LEN
        && dc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(NetError::InvalidName {
            what: "datacenter",
            value: dc.to_string(),
            reason: format!("use 1 to {MAX_DC_LEN} letters, digits, '-', '_' or '.'"),
        })
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), NetError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => NetError::Exists(path.to_path_buf()),
            _ => NetError::Io {
                path: path.to_path_buf(),
                cause: e,
            },
        })?;
    f.write_all(bytes).at(path)?;
    f.sync_all().at(path)
}

/// Writes a private file next to `path` and renames it over `path`, so a reader never
/// sees half an identity and the key is never readable by others, even briefly.
fn write_replace(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    let name = path
        .file_name()
        .ok_or_else(|| NetError::BadFile {
            path: path.to_path_buf(),
            reason: "not a file name".into(),
        })?
        .to_string_lossy();
    let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = write_new(&tmp, bytes, 0o600).and_then(|()| fs::rename(&tmp, path).at(path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_refuses_to_overwrite_and_keys_are_private() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cluster");
        init(&dir).unwrap();
        for f in [CA_KEY, DEPLOY_KEY] {
            let mode = fs::metadata(dir.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        assert!(dir.join("deploy.key.pub").exists());
        let before = fs::read(dir.join(CA_KEY)).unwrap();
        assert!(matches!(init(&dir), Err(NetError::Exists(_))));
        assert_eq!(fs::read(dir.join(CA_KEY)).unwrap(), before);
    }

    #[test]
    fn issue_checks_names_and_writes_private_file() {
        let d = tempfile::tempdir().unwrap();
        init(d.path()).unwrap();
        let out = d.path().join("h1.pem");
        issue(d.path(), "h1.dc1.example", "dc1", &out).unwrap();
        let mode = fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Reissuing replaces the file.
        issue(d.path(), "h1.dc1.example", "dc1", &out).unwrap();
        for (host, dc) in [
            ("", "dc1"),
            ("*.example", "dc1"),
            ("bad host", "dc1"),
            ("h1", ""),
            ("h1", "dc 1"),
        ] {
            assert!(
                matches!(
                    issue(d.path(), host, dc, &out),
                    Err(NetError::InvalidName { .. })
                ),
                "{host:?} {dc:?}"
            );
        }
        let missing = d.path().join("nowhere");
        let e = issue(&missing, "h1", "dc1", &out).unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
    }
}
