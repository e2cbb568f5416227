//! SMS rules as pure functions: UK mobile number normalisation and SMS gateway addresses.
//! Nothing here does I/O or reads the clock.
//!
//! - [`number`]: turns what a person typed into a [`MobileNumber`] in E.164 form, or returns the reason it
//!   is not one.
//! - [`gateway`]: the email address that the NHSmail SMS gateway turns into a text, and back.

pub mod gateway;
pub mod number;

pub use gateway::{AddressForm, AddressFormError, gateway_address, number_from_gateway_address};
pub use number::{MobileNumber, NumberError, normalise_number};
