"""The plant's view of the cell: MQTT and OPC UA servers and publishers on the event outlet."""
