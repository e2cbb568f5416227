//! SMS rules as pure functions: UK mobile number normalisation, SMS gateway addresses, and the
//! encoding, length and part count of a text. Nothing here does I/O or reads the clock.
//!
//! - [`number`]: turns what a person typed into a [`MobileNumber`] in E.164 form, or returns the reason it
//!   is not one.
//! - [`gateway`]: the email address that the NHSmail SMS gateway turns into a text, and back.
//! - [`text`]: GSM-7 or UCS-2, length in septets or UTF-16 code units, parts, and the maximum.

pub mod gateway;
pub mod number;
pub mod text;

pub use gateway::{AddressForm, AddressFormError, gateway_address, number_from_gateway_address};
pub use number::{MobileNumber, NumberError, normalise_number};
pub use text::{Encoding, TextError, TextInfo, analyse_text, max_length, validate_text};
