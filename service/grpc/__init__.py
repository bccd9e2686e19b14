"""The Open Inference Protocol v2 over gRPC: ``inference.GRPCInferenceService`` on ``ML_API_GRPC_PORT``."""
