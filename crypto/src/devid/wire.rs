//! SPIRE's `tpm_devid` JSON messages (`pkg/common/plugin/tpmdevid/devid.go`): Go structs without JSON tags, so
//! the keys are the Go field names and `[]byte` is standard padded base64 (`null` for a nil slice). Unknown keys
//! are ignored and absent ones are empty, as Go's decoder does.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Message 1, agent to server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationRequest {
    /// DevID chain, DER, leaf first.
    #[serde(rename = "DevIDCert", with = "b64_list", default)]
    pub devid_cert: Vec<Vec<u8>>,
    /// The DevID's TPMT_PUBLIC.
    #[serde(rename = "DevIDPub", with = "b64", default)]
    pub devid_pub: Vec<u8>,
    /// EK certificate, DER.
    #[serde(rename = "EKCert", with = "b64", default)]
    pub ek_cert: Vec<u8>,
    /// The EK's TPMT_PUBLIC.
    #[serde(rename = "EKPub", with = "b64", default)]
    pub ek_pub: Vec<u8>,
    /// The AK's TPMT_PUBLIC.
    #[serde(rename = "AKPub", with = "b64", default)]
    pub ak_pub: Vec<u8>,
    /// TPMS_ATTEST of TPM2_Certify(DevID, AK).
    #[serde(rename = "CertifiedDevID", with = "b64", default)]
    pub certified_devid: Vec<u8>,
    /// TPMT_SIGNATURE over it.
    #[serde(rename = "CertificationSignature", with = "b64", default)]
    pub certification_signature: Vec<u8>,
}

/// The credential part of message 2.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredActivation {
    /// TPM2B_ID_OBJECT contents.
    #[serde(rename = "Credential", with = "b64", default)]
    pub credential: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET contents.
    #[serde(rename = "Secret", with = "b64", default)]
    pub secret: Vec<u8>,
}

/// Message 2, server to agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeRequest {
    /// The proof-of-possession nonce.
    #[serde(rename = "DevID", with = "b64", default)]
    pub devid: Vec<u8>,
    /// The credential to activate (`null` makes SPIRE's agent fail).
    #[serde(rename = "CredActivation", default)]
    pub cred_activation: Option<CredActivation>,
    /// Beyond SPIRE's: the PCR quote asked for (absent unless the server has `pcr_selection`; SPIRE's agent
    /// ignores it).
    #[serde(rename = "PCRQuote", default, skip_serializing_if = "Option::is_none")]
    pub pcr_quote: Option<crate::devid::quote::QuoteRequest>,
}

/// Message 3, agent to server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeResponse {
    /// The DevID's signature over the nonce.
    #[serde(rename = "DevID", with = "b64", default)]
    pub devid: Vec<u8>,
    /// The activated secret.
    #[serde(rename = "CredActivation", with = "b64", default)]
    pub cred_activation: Vec<u8>,
    /// Beyond SPIRE's: the quote, when one was asked for and the agent is ours.
    #[serde(rename = "PCRQuote", default, skip_serializing_if = "Option::is_none")]
    pub pcr_quote: Option<crate::devid::quote::QuoteAnswer>,
}

pub(crate) mod b64 {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(Vec::new()),
            Some(text) => STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom),
        }
    }
}

pub(crate) mod b64_list {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| STANDARD.encode(b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        match Option::<Vec<Option<String>>>::deserialize(d)? {
            None => Ok(Vec::new()),
            Some(items) => items
                .into_iter()
                .map(|t| STANDARD.decode(t.unwrap_or_default().as_bytes()).map_err(serde::de::Error::custom))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_encoding_round_trips() {
        let req = AttestationRequest { devid_cert: vec![vec![1, 2, 3]], devid_pub: vec![0xff], ..Default::default() };
        let json = serde_json::to_string(&req).unwrap();
        assert!(json.starts_with(r#"{"DevIDCert":["AQID"],"DevIDPub":"/w==","EKCert":"","#), "{json}");
        assert_eq!(serde_json::from_str::<AttestationRequest>(&json).unwrap(), req);
        // Go nil slices and absent keys decode to empty; unknown keys are ignored.
        let go: AttestationRequest = serde_json::from_str(r#"{"DevIDCert":null,"EKPub":null,"Extra":1}"#).unwrap();
        assert_eq!(go, AttestationRequest::default());
        let ch: ChallengeRequest = serde_json::from_str(r#"{"DevID":"AA==","CredActivation":null}"#).unwrap();
        assert_eq!(ch.cred_activation, None);
    }

    #[test]
    fn refuses_non_go_base64() {
        for bad in [r#"{"DevIDPub":"AQID-_"}"#, r#"{"DevIDPub":"AQ"}"#, r#"{"DevIDPub":5}"#, r#"{"DevIDCert":"AQID"}"#]
        {
            assert!(serde_json::from_str::<AttestationRequest>(bad).is_err(), "{bad}");
        }
    }
}
