package server

import (
	"fmt"

	"github.com/crier-push/crier/internal/config"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/store/bolt"
	"github.com/crier-push/crier/internal/store/memory"
)

// openStore opens the store cfg asks for: memory with --memory, else the durable one in DataDir.
func openStore(cfg config.Config) (hub.Store, error) {
	if cfg.Memory {
		return memory.New(), nil
	}
	st, err := bolt.Open(cfg.DataDir, bolt.Options{})
	if err != nil {
		return nil, fmt.Errorf("open data dir %s: %w", cfg.DataDir, err)
	}
	return st, nil
}
