"""The state machine: clients, topics, groups and the operations that change them, without I/O or threads.

Private: the service (:class:`~pubsubsse.SSEPubSubService`) is its front. See the
architecture page of the docs for what each layer owns and may import.
"""
