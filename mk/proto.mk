# gRPC stubs of the Open Inference Protocol (service/grpc/proto/), committed: the image build and
# mypy need no code generator. grpcio-tools is pinned in the dev extra, so regenerating gives the same
# files; tests/grpc/test_proto.py fails when the committed ones are not what this target writes.
PROTO := service/grpc/proto/inference_v2.proto

.PHONY: proto
proto: venv ## Regenerate the committed gRPC stubs (service/grpc/proto/*_pb2*) from inference_v2.proto
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO)
