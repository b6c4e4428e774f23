package config

import (
	"os"
	"path/filepath"
	"testing"
)

// TestTLSFlags: --tls-cert and --tls-key, as flags, variables and YAML keys.
func TestTLSFlags(t *testing.T) {
	cfg, err := Load([]string{"--tls-cert", "c.pem", "--tls-key", "k.pem"}, func(string) string { return "" })
	if err != nil || cfg.TLSCert != "c.pem" || cfg.TLSKey != "k.pem" {
		t.Fatalf("flags: %+v %v", cfg, err)
	}
	env := map[string]string{"CRIER_TLS_CERT": "ec.pem", "CRIER_TLS_KEY": "ek.pem"}
	cfg, err = Load(nil, func(k string) string { return env[k] })
	if err != nil || cfg.TLSCert != "ec.pem" || cfg.TLSKey != "ek.pem" {
		t.Fatalf("environment: %+v %v", cfg, err)
	}
	file := filepath.Join(t.TempDir(), "crier.yaml")
	if err := os.WriteFile(file, []byte("tls_cert: yc.pem\ntls_key: yk.pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = Load([]string{"--config", file}, func(string) string { return "" })
	if err != nil || cfg.TLSCert != "yc.pem" || cfg.TLSKey != "yk.pem" {
		t.Fatalf("YAML: %+v %v", cfg, err)
	}
}
