module.exports = { version: '0.15.0' };
