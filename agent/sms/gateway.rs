//! Addresses of the NHSmail SMS gateway: an email to `<number>@<domain>` is sent as a text,
//! and a patient's reply arrives from the same kind of address.

use std::fmt;
use std::str::FromStr;

use super::number::{MobileNumber, normalise_number};

/// Form of the number in the local part of a gateway address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressForm {
    /// `07700900123@sms.nhs.net`, the form NHS examples use.
    #[default]
    National,
    /// `447700900123@sms.nhs.net`.
    International,
}

impl AddressForm {
    /// Returns the name used in configuration: `national` or `international`.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressForm::National => "national",
            AddressForm::International => "international",
        }
    }
}

impl fmt::Display for AddressForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an [`AddressForm`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown address form \"{value}\"; expected \"national\" or \"international\"")]
pub struct AddressFormError {
    pub value: String,
}

impl FromStr for AddressForm {
    type Err = AddressFormError;

    /// Parses `national` or `international`, ignoring case and surrounding whitespace.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let trimmed = value.trim();
        if trimmed.eq_ignore_ascii_case("national") {
            Ok(AddressForm::National)
        } else if trimmed.eq_ignore_ascii_case("international") {
            Ok(AddressForm::International)
        } else {
            Err(AddressFormError { value: trimmed.to_string() })
        }
    }
}

/// Builds the gateway address for a number: `07700900123@sms.nhs.net` or
/// `447700900123@sms.nhs.net`. The domain is used as given.
pub fn gateway_address(number: &MobileNumber, form: AddressForm, domain: &str) -> String {
    let local_part = match form {
        AddressForm::National => number.national(),
        AddressForm::International => number.international_digits(),
    };
    format!("{local_part}@{domain}")
}

/// Returns the mobile number of a gateway address, or `None` if the address is in another
/// domain or its local part is not a UK mobile number.
///
/// Accepts both forms (national and international digits, also `+44…`), compares the domain
/// ignoring case, and takes the address from inside angle brackets when there are any, so
/// `"07700900123@sms.nhs.net" <07700900123@sms.nhs.net>` works.
pub fn number_from_gateway_address(addr: &str, domain: &str) -> Option<MobileNumber> {
    let address = bracketed_address(addr).trim();
    let (local_part, host) = address.rsplit_once('@')?;
    if !host.eq_ignore_ascii_case(domain.trim()) {
        return None;
    }

    let digits = local_part.strip_prefix('+').unwrap_or(local_part);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    normalise_number(local_part).ok()
}

/// Returns the text inside the last `<…>` of a mailbox, or the whole text if it has none.
fn bracketed_address(mailbox: &str) -> &str {
    let Some(open) = mailbox.rfind('<') else {
        return mailbox;
    };
    let inside = &mailbox[open + 1..];
    match inside.find('>') {
        Some(close) => &inside[..close],
        None => inside,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "sms.nhs.net";

    fn drama_number() -> MobileNumber {
        normalise_number("07700 900123").unwrap()
    }

    #[test]
    fn gateway_address_uses_chosen_form() {
        let number = drama_number();
        assert_eq!(gateway_address(&number, AddressForm::National, DOMAIN), "07700900123@sms.nhs.net");
        assert_eq!(gateway_address(&number, AddressForm::International, DOMAIN), "447700900123@sms.nhs.net");
    }

    #[test]
    fn address_form_parses_names() {
        assert_eq!("national".parse(), Ok(AddressForm::National));
        assert_eq!(" International ".parse(), Ok(AddressForm::International));
        assert_eq!("e164".parse::<AddressForm>(), Err(AddressFormError { value: "e164".to_string() }));
    }

    #[test]
    fn address_form_round_trips_names() {
        for form in [AddressForm::National, AddressForm::International] {
            assert_eq!(form.to_string().parse(), Ok(form));
        }
    }

    #[test]
    fn gateway_addresses_yield_their_number() {
        let cases = [
            "07700900123@sms.nhs.net",
            "447700900123@sms.nhs.net",
            "+447700900123@sms.nhs.net",
            "07700900123@SMS.NHS.NET",
            "<07700900123@sms.nhs.net>",
            "\"07700900123@sms.nhs.net\" <07700900123@sms.nhs.net>",
            "Patient <447700900123@Sms.Nhs.Net>",
            "  07700900123@sms.nhs.net  ",
        ];
        for addr in cases {
            assert_eq!(number_from_gateway_address(addr, DOMAIN), Some(drama_number()), "address {addr:?}");
        }
    }

    #[test]
    fn other_addresses_yield_no_number() {
        let cases = [
            "07700900123@example.org",
            "07700900123@sms.nhs.net.example.org",
            "\"07700900123@sms.nhs.net\" <practice@example.org>",
            "noreply@sms.nhs.net",
            "07700 900123@sms.nhs.net",
            "01632960123@sms.nhs.net",
            "@sms.nhs.net",
            "07700900123",
            "",
        ];
        for addr in cases {
            assert_eq!(number_from_gateway_address(addr, DOMAIN), None, "address {addr:?}");
        }
    }

    #[test]
    fn built_address_parses_back() {
        let number = drama_number();
        for form in [AddressForm::National, AddressForm::International] {
            let address = gateway_address(&number, form, DOMAIN);
            assert_eq!(number_from_gateway_address(&address, DOMAIN), Some(number.clone()));
        }
    }
}
