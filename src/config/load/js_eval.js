// Evaluates one ecosystem file the way PM2 does (`require`, with `import()` for ES
// modules) and prints its value as JSON after a marker. Anything the file itself
// prints goes to stderr so it cannot be mistaken for the result.
'use strict';
const file = process.argv[1];
const marker = process.argv[2];
const writeResult = process.stdout.write.bind(process.stdout);
process.stdout.write = (chunk, encoding, callback) => process.stderr.write(chunk, encoding, callback);
console.log = console.info = console.debug = console.error;

function replacer(_key, value) {
  if (typeof value === 'bigint') return value.toString();
  return value;
}

function emit(result) {
  writeResult(marker + JSON.stringify(result, replacer) + '\n', () => process.exit(0));
}

async function load() {
  let value;
  try {
    value = require(file);
  } catch (err) {
    if (err && (err.code === 'ERR_REQUIRE_ESM' || err.code === 'ERR_REQUIRE_ASYNC_MODULE')) {
      value = await import(require('url').pathToFileURL(file).href);
    } else {
      throw err;
    }
  }
  let esmDefault = false;
  if (value && typeof value === 'object' && value[Symbol.toStringTag] === 'Module') {
    esmDefault = value.apps === undefined && value.default !== undefined;
    value = esmDefault ? value.default : { ...value };
  }
  return { value: value === undefined ? null : value, esmDefault };
}

load().then(
  ({ value, esmDefault }) => emit({ value, esm_default: esmDefault }),
  (err) => emit({
    error: {
      name: err && err.name ? String(err.name) : 'Error',
      message: err && err.message ? String(err.message) : String(err),
      code: err && err.code ? String(err.code) : null,
      stack: err && err.stack ? String(err.stack) : '',
    },
  }),
);
