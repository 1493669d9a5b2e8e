// goplugin-host loads a plugin with hashicorp's own go-plugin client library (Debian's
// golang-github-hashicorp-go-plugin-dev), the way SPIRE does: magic cookie BundlePublisher, gRPC only, no
// AutoMTLS. It calls SPIRE's Init, Configure and PublishBundle over the connection the library dialed, then
// unloads the plugin (GRPCController/Shutdown) and checks that it exited.
//
// usage: goplugin-host PLUGIN SIGNER_SOCKET BUNDLE_DER
//
// Messages are encoded by hand (a few protobuf fields) so no generated Go code is needed.
package main

import (
	"context"
	"fmt"
	"io/ioutil"
	"os"
	"os/exec"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func varint(x uint64) []byte {
	var out []byte
	for x >= 0x80 {
		out = append(out, byte(x)|0x80)
		x >>= 7
	}
	return append(out, byte(x))
}

// field encodes a length-delimited protobuf field.
func field(num int, data []byte) []byte {
	out := varint(uint64(num<<3 | 2))
	out = append(out, varint(uint64(len(data)))...)
	return append(out, data...)
}

type bundlePublisher struct{ plugin.NetRPCUnsupportedPlugin }

func (bundlePublisher) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }
func (bundlePublisher) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (interface{}, error) {
	return conn, nil
}

func call(conn *grpc.ClientConn, method string, req []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var resp []byte
	err := conn.Invoke(ctx, method, &req, &resp, grpc.ForceCodec(rawCodec{}))
	return resp, err
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "goplugin-host: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 4 {
		fail("usage: goplugin-host PLUGIN SIGNER_SOCKET BUNDLE_DER")
	}
	der, err := ioutil.ReadFile(os.Args[3])
	if err != nil {
		fail("%v", err)
	}
	cmd := exec.Command(os.Args[1])
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  plugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: "BundlePublisher", MagicCookieValue: "BundlePublisher"},
		Plugins:          map[string]plugin.Plugin{"signer": bundlePublisher{}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Debug}),
	})
	defer client.Kill()
	rpc, err := client.Client()
	if err != nil {
		fail("handshake: %v", err)
	}
	if err := rpc.Ping(); err != nil {
		fail("health: %v", err)
	}
	raw, err := rpc.Dispense("signer")
	if err != nil {
		fail("dispense: %v", err)
	}
	conn := raw.(*grpc.ClientConn)
	init := field(1, []byte("spire.hostservice.common.metrics.v1.Metrics"))
	resp, err := call(conn, "/spire.service.private.init.v1.Init/Init", init)
	if err != nil {
		fail("Init: %v", err)
	}
	fmt.Printf("init: %d bytes of service names\n", len(resp))
	hcl := fmt.Sprintf("socket = %q", os.Args[2])
	configure := append(field(1, field(1, []byte("example.org"))), field(2, []byte(hcl))...)
	if _, err := call(conn, "/spire.service.common.config.v1.Config/Configure", configure); err != nil {
		fail("Configure: %v", err)
	}
	bundle := append(field(1, []byte("example.org")), field(2, field(1, der))...)
	if _, err := call(conn, "/spire.plugin.server.bundlepublisher.v1.BundlePublisher/PublishBundle", field(1, bundle)); err != nil {
		fail("PublishBundle: %v", err)
	}
	fmt.Println("published")
	client.Kill()
	if !client.Exited() {
		fail("plugin still running after Kill")
	}
	if cmd.ProcessState == nil || !cmd.ProcessState.Success() {
		fail("plugin exit: %v", cmd.ProcessState)
	}
	fmt.Println("unloaded: plugin exited 0")
}
