# Front doors: one codec per protocol, translating its bytes to the engine's typed requests and outcomes back.
