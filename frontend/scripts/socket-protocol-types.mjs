// The TypeScript types of the voice WebSocket protocol, generated from its one source: the pydantic models in
// backend/app/voice/socket_protocol.py, through their JSON Schema, by json-schema-to-typescript.
//
//   npm run protocol:generate     writes src/api/socketProtocol.generated.ts
//   node scripts/socket-protocol-types.mjs --stdin --stdout < schema.json
//                                 the types of a given schema, on stdout (backend/tests/test_socket_protocol.py)
//
// Without --stdin the schema comes from `python -m app.voice.socket_protocol`, run with $PYTHON or the
// backend's virtual environment (backend/.venv).
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile } from 'json-schema-to-typescript';

const frontend = join(dirname(fileURLToPath(import.meta.url)), '..');
const backend = join(frontend, '..', 'backend');
const output = join(frontend, 'src', 'api', 'socketProtocol.generated.ts');
const args = process.argv.slice(2);

const BANNER = `// GENERATED FILE: do not edit. The voice WebSocket protocol (WS /v1/conversation/ws), generated from the
// pydantic models in backend/app/voice/socket_protocol.py by json-schema-to-typescript:
//   cd frontend && npm run protocol:generate
// backend/tests/test_socket_protocol.py fails when this file differs from what the models give.`;

const schemaText = args.includes('--stdin')
  ? readFileSync(0, 'utf8')
  : execFileSync(process.env.PYTHON || join(backend, '.venv', 'bin', 'python'), ['-m', 'app.voice.socket_protocol'], {
      cwd: backend,
      encoding: 'utf8',
    });

const types = await compile(JSON.parse(schemaText), 'SocketProtocol', {
  bannerComment: BANNER,
  additionalProperties: false, // the types name every field; what the server ignores is not part of the protocol
  unknownAny: true,
  strictIndexSignatures: true,
  style: { singleQuote: true, printWidth: 120 },
});

if (args.includes('--stdout')) process.stdout.write(types);
else writeFileSync(output, types);
