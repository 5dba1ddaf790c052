"""Wire packets: protobuf modules generated from proto/ and the generated dispatch."""
