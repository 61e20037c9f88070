/// <reference types="vitest/config" />
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// The API server during development; the built client is served by the backend itself.
const apiTarget = process.env.GEMMAVOICE_API_TARGET ?? 'http://127.0.0.1:8000';

export default defineConfig({
  plugins: [react()],
  server: {
    proxy: {
      '/v1': { target: apiTarget, changeOrigin: true, ws: true },
      '/health': { target: apiTarget, changeOrigin: true },
      '/metrics': { target: apiTarget, changeOrigin: true },
    },
  },
  build: {
    outDir: 'dist',
    sourcemap: true,
    // The AudioWorklet module is loaded by URL: emit it as a file, never as an inlined data: URL
    // (which a Content-Security-Policy may forbid).
    assetsInlineLimit: (file) => (file.endsWith('.worklet.js') ? false : undefined),
    // livekit-client is one ~600 kB chunk, loaded only in LiveKit mode.
    chunkSizeWarningLimit: 800,
  },
  test: {
    environment: 'jsdom',
    setupFiles: ['./tests/setup.ts'],
    include: ['tests/**/*.test.{ts,tsx}'],
    restoreMocks: true,
  },
});
