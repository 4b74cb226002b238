//! `herald.v1.Event` field numbers (`proto/herald/v1/event.proto`), for
//! code that reads or writes events on the wire without the generated
//! type: the client's producer encodes events directly, and the broker
//! checks them in place. A test holds them to the descriptor.

pub const ID: u32 = 1;
pub const SOURCE: u32 = 2;
pub const TYPE: u32 = 3;
pub const SUBJECT: u32 = 4;
pub const TIME: u32 = 5;
pub const DATA_CONTENT_TYPE: u32 = 6;
pub const DATA_SCHEMA: u32 = 7;
pub const ATTRIBUTES: u32 = 8;
pub const KEY: u32 = 9;
pub const DATA: u32 = 10;

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn numbers_match_the_descriptor() {
        let fds = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let event = fds
            .file
            .iter()
            .filter(|f| f.package() == "herald.v1")
            .flat_map(|f| &f.message_type)
            .find(|m| m.name() == "Event")
            .expect("herald.v1.Event");
        let number = |name: &str| {
            event
                .field
                .iter()
                .find(|f| f.name() == name)
                .unwrap_or_else(|| panic!("no field {name}"))
                .number() as u32
        };
        for (name, constant) in [
            ("id", super::ID),
            ("source", super::SOURCE),
            ("type", super::TYPE),
            ("subject", super::SUBJECT),
            ("time", super::TIME),
            ("data_content_type", super::DATA_CONTENT_TYPE),
            ("data_schema", super::DATA_SCHEMA),
            ("attributes", super::ATTRIBUTES),
            ("key", super::KEY),
            ("data", super::DATA),
        ] {
            assert_eq!(number(name), constant, "{name}");
        }
        assert_eq!(event.field.len(), 10, "a new Event field needs a constant");
    }
}
