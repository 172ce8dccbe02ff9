//! Encrypting a signed id_token for LivePerson (RFC 7516 compact JWE, "JWS in JWE"):
//! `alg` RSA-OAEP-256 (RFC 7518 §4.3) with LivePerson's public key, `enc` A128CBC-HS256
//! (RFC 7518 §5.2.3) or A256GCM (§5.3), `cty: JWT`.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::cipher::{EncryptionContext, PaddedBlockEncryptingKey, UnboundCipherKey, AES_128};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::crypto::{b64url, random_bytes};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Enc {
    #[serde(rename = "A128CBC-HS256")]
    A128CbcHs256,
    #[serde(rename = "A256GCM")]
    A256Gcm,
}

impl Enc {
    pub fn as_str(self) -> &'static str {
        match self {
            Enc::A128CbcHs256 => "A128CBC-HS256",
            Enc::A256Gcm => "A256GCM",
        }
    }
    pub fn parse(s: &str) -> Option<Enc> {
        match s {
            "A128CBC-HS256" => Some(Enc::A128CbcHs256),
            "A256GCM" => Some(Enc::A256Gcm),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JweError {
    #[error("the LivePerson public key is not base64 of a DER SubjectPublicKeyInfo RSA key (paste it as one line, without PEM header, footer or line breaks)")]
    BadKey,
    #[error("the LivePerson public key is too small (at least 2048 bits)")]
    SmallKey,
    #[error("encryption failed")]
    Failed,
}

/// LivePerson's RSA public key as LiveEngage hands it out: one line of base64 DER SPKI.
/// PEM armour and line breaks are tolerated, since that is how keys get pasted.
pub fn parse_public_key(text: &str) -> Result<PublicEncryptingKey, JweError> {
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(&body).map_err(|_| JweError::BadKey)?;
    let key = PublicEncryptingKey::from_der(&der).map_err(|_| JweError::BadKey)?;
    if key.key_size_bits() < 2048 {
        return Err(JweError::SmallKey);
    }
    Ok(key)
}

/// Encrypts `jws` (a compact JWS) to a compact JWE.
pub fn encrypt(jws: &str, key: &PublicEncryptingKey, enc: Enc, kid: Option<&str>) -> Result<String, JweError> {
    let mut header = json!({"alg": "RSA-OAEP-256", "enc": enc.as_str(), "cty": "JWT"});
    if let Some(k) = kid {
        header["kid"] = json!(k);
    }
    let header_b64 = b64url(header.to_string().as_bytes());
    let aad = header_b64.as_bytes();
    let cek: [u8; 32] = random_bytes();
    let oaep = OaepPublicEncryptingKey::new(key.clone()).map_err(|_| JweError::Failed)?;
    let mut wrapped = vec![0u8; oaep.ciphertext_size()];
    let wrapped =
        oaep.encrypt(&OAEP_SHA256_MGF1SHA256, &cek, &mut wrapped, None).map_err(|_| JweError::Failed)?.to_vec();
    let (iv, ciphertext, tag) = match enc {
        Enc::A128CbcHs256 => {
            // CEK = MAC_KEY (16) || ENC_KEY (16).
            let (mac_key, enc_key) = cek.split_at(16);
            let iv: [u8; 16] = random_bytes();
            let key = UnboundCipherKey::new(&AES_128, enc_key).map_err(|_| JweError::Failed)?;
            let cbc = PaddedBlockEncryptingKey::cbc_pkcs7(key).map_err(|_| JweError::Failed)?;
            let mut ct = jws.as_bytes().to_vec();
            cbc.less_safe_encrypt(&mut ct, EncryptionContext::Iv128(FixedLength::from(iv)))
                .map_err(|_| JweError::Failed)?;
            let al = ((aad.len() as u64) * 8).to_be_bytes();
            let mut mac_input = Vec::with_capacity(aad.len() + iv.len() + ct.len() + 8);
            mac_input.extend_from_slice(aad);
            mac_input.extend_from_slice(&iv);
            mac_input.extend_from_slice(&ct);
            mac_input.extend_from_slice(&al);
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, mac_key), &mac_input);
            (iv.to_vec(), ct, tag.as_ref()[..16].to_vec())
        }
        Enc::A256Gcm => {
            let iv: [u8; 12] = random_bytes();
            let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &cek).map_err(|_| JweError::Failed)?);
            let mut ct = jws.as_bytes().to_vec();
            let tag = key
                .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), &mut ct)
                .map_err(|_| JweError::Failed)?;
            (iv.to_vec(), ct, tag.as_ref().to_vec())
        }
    };
    Ok(format!("{header_b64}.{}.{}.{}.{}", b64url(&wrapped), b64url(&iv), b64url(&ciphertext), b64url(&tag)))
}
