"""The Open Inference Protocol v2 (KServe v2 / Triton), independent of its transports.

``types`` is the protocol's data, ``tensors`` its tensor encodings, ``model`` how an ml-api model
looks through it, ``handler`` what each call does over the data plane. The REST front end
(``service/api/v2``) and the gRPC one (``service/grpc``) only translate their wire formats.
"""
