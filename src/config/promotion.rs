//! `[promotion]`: the key the registry signs verification summaries of promotions with. The
//! PEM file is read at load time, relative to the config file's directory, and parsed when the
//! registry opens (`signing::SigningKey`); without it a key is generated and kept in the store.

use secrecy::SecretString;
use serde::Deserialize;

use super::files::Files;

/// `[promotion]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FilePromotion {
    /// PKCS#8 PEM file of the VSA signing key.
    signing_key: Option<String>,
}

impl FilePromotion {
    /// The PEM text of the configured signing key, if one is configured.
    pub(super) fn load(self, files: &mut Files) -> Result<Option<SecretString>, String> {
        let pem = self.signing_key.as_deref().map(|path| files.read(path, "promotion.signing_key")).transpose()?;
        Ok(pem.map(SecretString::from))
    }
}
