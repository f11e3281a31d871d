"""TFLite exports: the writer (TFLiteConverter), the fused LSTM, and the LiteRT runtime."""
