//! Who a verified client certificate names (mutual TLS).
//!
//! The rule: the first subjectAltName entry, in certificate order, that is
//! a DNS name or an email address; if there is none, the first common name
//! (CN) of the subject. An entry longer than [`MAX_IDENTITY`] bytes, or
//! with control characters, is skipped: it could not be a user id and must
//! not reach a log line. With none left the client has no identity (it is
//! still admitted: its CA vouched for it).

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The longest identity taken from a certificate, in bytes.
pub(crate) const MAX_IDENTITY: usize = 256;

/// The identity of the end-entity certificate `cert` (already verified by
/// rustls), by the rule above.
pub(crate) fn of_certificate(cert: &CertificateDer<'_>) -> Option<Arc<str>> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let from_san = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|name| match name {
                GeneralName::DNSName(name) | GeneralName::RFC822Name(name) => usable(name),
                _ => None,
            })
        });
    from_san.or_else(|| {
        parsed
            .subject()
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok().and_then(usable))
    })
}

fn usable(name: &str) -> Option<Arc<str>> {
    let fits =
        !name.is_empty() && name.len() <= MAX_IDENTITY && !name.chars().any(char::is_control);
    fits.then(|| Arc::from(name))
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    use super::*;

    fn cert(sans: Vec<SanType>, cn: Option<&str>) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_first_dns_or_email_san_wins_over_the_common_name() {
        let sans = vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::Rfc822Name("ann@example.com".try_into().unwrap()),
            SanType::DnsName("svc.example.com".try_into().unwrap()),
        ];
        let identity = of_certificate(&cert(sans, Some("Ann"))).unwrap();
        assert_eq!(&*identity, "ann@example.com");
    }

    #[test]
    fn without_a_usable_san_the_common_name_is_taken() {
        let sans = vec![SanType::IpAddress([10, 0, 0, 1].into())];
        assert_eq!(
            &*of_certificate(&cert(sans, Some("billing"))).unwrap(),
            "billing"
        );
        let long = "x".repeat(MAX_IDENTITY + 1);
        let sans = vec![SanType::DnsName(long.as_str().try_into().unwrap())];
        assert_eq!(
            &*of_certificate(&cert(sans, Some("short"))).unwrap(),
            "short"
        );
    }

    #[test]
    fn a_certificate_that_names_nobody_has_no_identity() {
        assert_eq!(of_certificate(&cert(Vec::new(), None)), None);
        assert_eq!(of_certificate(&CertificateDer::from(vec![1, 2, 3])), None);
    }
}
