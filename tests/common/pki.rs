//! Key material made in the test: a test CA with a server certificate for 127.0.0.1 and a client
//! certificate (rcgen), and P-256 keys for signing registry and OIDC tokens. Nothing is checked in:
//! every run makes its own, in a temp dir.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

/// A CA and what it signed, written as PEM files into a directory.
pub struct TestPki {
    /// The directory holding every file.
    pub dir: PathBuf,
    /// The CA certificate (`ca.crt`), what clients trust.
    pub ca_pem: String,
    /// `server.crt` / `server.key`: for `localhost` and `127.0.0.1`.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// `client.cert` / `client.key`: a client certificate (CN `admission-controller`).
    pub client_cert_pem: String,
    pub client_key_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestPki {
    /// A new CA named `name`, with files in `dir` (created).
    pub fn new(dir: &Path, name: &str) -> TestPki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("portcullis test CA {name}"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA certificate");
        let ca_pem = issuer.pem();
        std::fs::write(dir.join("ca.crt"), &ca_pem).expect("write ca.crt");

        let mut pki = TestPki {
            dir: dir.to_owned(),
            ca_pem,
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert_pem: String::new(),
            client_key_pem: String::new(),
            issuer,
        };
        let (cert, key) = pki.server_pair();
        std::fs::write(&pki.server_cert, cert).expect("write server.crt");
        std::fs::write(&pki.server_key, key).expect("write server.key");
        let (cert, key) = pki.leaf(&["admission-controller"], "admission-controller", ExtendedKeyUsagePurpose::ClientAuth);
        pki.client_cert_pem = cert;
        pki.client_key_pem = key;
        pki
    }

    /// A fresh server certificate and key (PEM) for `localhost` and `127.0.0.1`.
    pub fn server_pair(&self) -> (String, String) {
        self.leaf(&["localhost"], "portcullis", ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn leaf(&self, names: &[&str], common_name: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf params");
        params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    }

    /// `[server.tls]` serving this CA's server certificate and verifying client certificates it
    /// signed, when presented (`client_auth = "optional"`).
    pub fn server_tls_toml(&self) -> String {
        format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nclient_auth = \"optional\"\n",
            self.server_cert.display(),
            self.server_key.display(),
            self.dir.join("ca.crt").display()
        )
    }

    /// A `--cert-dir` for skopeo and podman: `ca.crt` to trust, and with `client`, the client
    /// certificate as `client.cert` / `client.key`.
    pub fn cert_dir(&self, dir: &Path, client: bool) -> PathBuf {
        std::fs::create_dir_all(dir).expect("cert dir");
        std::fs::write(dir.join("ca.crt"), &self.ca_pem).expect("write ca.crt");
        if client {
            std::fs::write(dir.join("client.cert"), &self.client_cert_pem).expect("write client.cert");
            std::fs::write(dir.join("client.key"), &self.client_key_pem).expect("write client.key");
        }
        dir.to_owned()
    }

    /// An HTTPS client trusting this CA, with the client certificate when `client`.
    pub fn client(&self, client: bool) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA pem"))
            .redirect(reqwest::redirect::Policy::none());
        if client {
            let identity = format!("{}{}", self.client_key_pem, self.client_cert_pem);
            builder = builder.identity(reqwest::Identity::from_pem(identity.as_bytes()).expect("client identity"));
        }
        builder.build().expect("https client")
    }
}

/// A P-256 key for signing tokens (PKCS#8 PEM), with its public point for a JWK.
pub struct SigningKey {
    pub key: KeyPair,
}

impl SigningKey {
    pub fn generate() -> SigningKey {
        SigningKey { key: KeyPair::generate().expect("P-256 key") }
    }

    /// `-----BEGIN PRIVATE KEY-----` (PKCS#8), as `auth.signing_key` reads it.
    pub fn pkcs8_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The public key as SubjectPublicKeyInfo PEM (what an attacker would HMAC with).
    pub fn public_pem(&self) -> String {
        self.key.public_key_pem()
    }

    /// A jsonwebtoken key to sign ES256 tokens with.
    pub fn encoding_key(&self) -> jsonwebtoken::EncodingKey {
        jsonwebtoken::EncodingKey::from_ec_der(&self.key.serialize_der())
    }

    /// A JWKS holding the public key as `kid`.
    pub fn jwks(&self, kid: &str) -> String {
        use base64::Engine as _;
        let point = self.key.public_key_raw();
        assert_eq!((point.len(), point[0]), (65, 4), "an uncompressed P-256 point");
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": b64(&point[1..33]), "y": b64(&point[33..]),
        }]})
        .to_string()
    }

    /// Signs `claims` with ES256 and `kid`.
    pub fn sign(&self, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding_key()).expect("sign token")
    }
}
