# -*- coding: utf-8 -*-
# Copyright (c) the reconcile maintainers
# SPDX-License-Identifier: MIT OR Apache-2.0
"""What the reconcile.pm2 modules share: finding and running the `reconcile`
binary, reading its JSON plan, and turning a plan into Ansible's diff."""

from __future__ import annotations

import json
import os

# `reconcile plan` exit codes (as `terraform plan -detailed-exitcode`).
PLAN_NO_CHANGES = 0
PLAN_CHANGES = 2

# Options every module takes (the arguments of `reconcile plan` and `apply` that
# name the project and the daemon).
COMMON_ARGS = dict(
    project_dir=dict(type='path', required=True),
    binary=dict(type='path', default='reconcile'),
    config=dict(type='path'),
    env=dict(type='str'),
    pm2_home=dict(type='path'),
)


def binary_path(module):
    """The `reconcile` executable: `binary` as given when it holds a slash, else
    looked up on PATH (failing the task with a clear message when it is missing)."""
    binary = module.params['binary']
    if os.sep in binary:
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            module.fail_json(msg='binary %s is not an executable file' % binary)
        return binary
    return module.get_bin_path(binary, required=True)


def run(module, subcommand, extra):
    """Runs `reconcile -C PROJECT_DIR SUBCOMMAND --format json ...` in the project
    directory; returns (rc, stdout, stderr, argv)."""
    project_dir = module.params['project_dir']
    if not os.path.isdir(project_dir):
        module.fail_json(msg='project_dir %s is not a directory' % project_dir)
    argv = [binary_path(module), '-C', project_dir, subcommand, '--format', 'json', '--color', 'never']
    if module.params['config']:
        argv += ['--config', module.params['config']]
    if module.params['env']:
        argv += ['--env', module.params['env']]
    argv += extra
    environ = {'NO_COLOR': '1'}
    if module.params['pm2_home']:
        environ['PM2_HOME'] = module.params['pm2_home']
    rc, out, err = module.run_command(argv, cwd=project_dir, environ_update=environ)
    return rc, out, err, argv


def message(out, err, what):
    """reconcile's own message for a failure: its stderr (where it says what went
    wrong and what to do), else stdout, else a generic line."""
    text = (err or '').strip() or (out or '').strip()
    return text or '%s failed without a message' % what


def parse_json(module, out, what, **result):
    """Parses reconcile's JSON output, failing the task if it is not JSON."""
    try:
        return json.loads(out)
    except ValueError as e:
        module.fail_json(msg='%s printed no JSON (%s): %s' % (what, e, out[:500]), **result)


def plan(module, extra=None):
    """Runs `reconcile plan`; returns (plan, has_changes, result fields). A plan
    that fails (exit 1: lint errors, conflicts, daemon faults) fails the task with
    reconcile's message."""
    rc, out, err, argv = run(module, 'plan', extra or [])
    fields = dict(cmd=argv, stderr=err)
    if rc not in (PLAN_NO_CHANGES, PLAN_CHANGES):
        module.fail_json(msg=message(out, err, 'reconcile plan'), rc=rc, **fields)
    # No `rc` in a successful result: Ansible fails any task whose result has a
    # non-zero `rc`, and 2 (changes) is a success here.
    return parse_json(module, out, 'reconcile plan', **fields), rc == PLAN_CHANGES, fields


def _show(value):
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def plan_diff(plan_json):
    """Ansible's diff for a plan: one entry per changed app, its attributes before
    and after, one `path: value` line each. Values are those of the plan, in which
    reconcile has already replaced every secret (`(sensitive)`)."""
    diffs = []
    for change in plan_json.get('changes', []):
        if change.get('action') == 'noop':
            continue
        before, after = [], []
        for attr in change.get('attributes', []):
            mark = '  # forces replacement' if attr.get('forces_replacement') else ''
            if attr.get('before') is not None:
                before.append('%s: %s\n' % (attr['path'], _show(attr['before'])))
            if attr.get('after') is not None:
                after.append('%s: %s%s\n' % (attr['path'], _show(attr['after']), mark))
        label = '%s (namespace %s)' % (change.get('name'), change.get('namespace'))
        ids = change.get('pm_ids') or []
        diffs.append(dict(
            before_header='%s%s' % (label, ' [pm_id %s]' % ', '.join(str(i) for i in ids) if ids else ''),
            after_header='%s: %s (%s)' % (label, change.get('action'), change.get('reason')),
            before=''.join(before),
            after=''.join(after),
        ))
    return diffs
