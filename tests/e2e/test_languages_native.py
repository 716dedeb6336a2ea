"""What the native-code languages' TOMLs promise beyond tests/e2e/test_languages.py.

Each case is a program that depends on one of those choices: Pascal's unit path written into the argv (no
/etc/fpc.cfg in the box), COBOL's free format by default with -fixed as an option, Fortran's source form following
the file name, any Ada unit name, Nim's configuration from /etc/nim, Crystal's standard modules backed by C
libraries, Objective-C's Foundation on GCC's runtime, and both kinds of assembly program (own _start, or main with
libc). The last cases: a 32-bit x86 program's int 0x80 is another syscall ABI, which the sandbox kills.
"""

from __future__ import annotations

from typing import Any

import pytest

from cellblock.engine import Engine
from cellblock.models import JobSpec

pytestmark = pytest.mark.sandbox

FIXED_COBOL = """000100 IDENTIFICATION DIVISION.
000200 PROGRAM-ID. FIXED.
000300* A COMMENT IN COLUMN 7
000400 PROCEDURE DIVISION.
000500     DISPLAY "fixed 42".
000600     STOP RUN.
"""
FIXED_FORTRAN = """C     FIXED FORM: A COMMENT IN COLUMN 1, CODE FROM COLUMN 7
      PROGRAM FIXED
      INTEGER I
      I = 40 +
     &    2
      WRITE (*, '(A, I0)') 'fixed ', I
      END
"""
PASCAL_UNITS = """program units;
uses sysutils, math, strutils, classes;
var list: TStringList;
begin
  list := TStringList.Create;
  list.Add(IntToStr(Max(40, 2) + 2));
  writeln(ReverseString('cba'), ' ', list[0]);
  list.Free;
end.
"""
ADA_ANY_UNIT = """with Ada.Text_IO; use Ada.Text_IO;
procedure Solution is
begin
   Put_Line ("abc 42");
end Solution;
"""
NIM_STDLIB = """import std/[strutils, tables, algorithm, macros]
var t = initTable[string, int]()
t["x"] = 42
var s = @[3, 1, 2]
s.sort()
echo "abc".toUpperAscii.toLowerAscii, " ", t["x"], " ", s
"""
CRYSTAL_STDLIB = """require "big"
require "json"
require "yaml"
puts({"a" => 1}.to_json)
puts BigInt.new(2) ** 100
puts YAML.dump([42]).lines[1]
"""
OBJC_FOUNDATION = """#import <Foundation/Foundation.h>

@interface Counter : NSObject {
    int count;  // GCC's runtime has the fragile ABI: a property's instance variable is declared
}
@property (nonatomic) int count;
- (void)add:(int)n;
@end

@implementation Counter
@synthesize count;
- (void)add:(int)n { self.count += n; }
@end

int main(void) {
    @autoreleasepool {
        Counter *c = [[Counter alloc] init];
        for (NSNumber *n in @[@40, @2]) [c add:[n intValue]];
        NSMutableDictionary *d = [NSMutableDictionary dictionary];
        [d setObject:@(c.count) forKey:@"answer"];
        printf("%s\\n", [[NSString stringWithFormat:@"%@ %@", @"abc", [d objectForKey:@"answer"]] UTF8String]);
    }
    return 0;
}
"""
NASM_MAIN_LIBC = """extern printf
section .rodata
fmt: db "%s %d", 10, 0
abc: db "abc", 0
section .text
global main
main:
    sub rsp, 8
    mov rdi, fmt
    mov rsi, abc
    mov edx, 42
    xor eax, eax
    call printf
    add rsp, 8
    xor eax, eax
    ret
"""
GAS_INTEL = """.intel_syntax noprefix
.text
.globl _start
_start:
    mov eax, 1
    mov edi, 1
    lea rsi, [rip + msg]
    mov edx, 7
    syscall
    mov eax, 60
    xor edi, edi
    syscall
.data
msg: .ascii "abc 42\\n"
"""
NASM_32BIT = """section .data
msg: db "never printed", 10
section .text
global _start
_start:
    mov eax, 4
    mov ebx, 1
    mov ecx, msg
    mov edx, 14
    int 0x80
    mov eax, 1
    xor ebx, ebx
    int 0x80
"""


@pytest.mark.parametrize(
    ("language", "file_name", "source", "options", "expected"),
    [
        ("cobol", "main.cob", FIXED_COBOL, ["-fixed"], "fixed 42\n"),
        ("fortran", "main.f", FIXED_FORTRAN, ["-ffixed-form"], "fixed 42\n"),
        ("pascal", "main.pas", PASCAL_UNITS, [], "abc 42\n"),
        ("ada", "main.adb", ADA_ANY_UNIT, [], "abc 42\n"),
        ("nim", "main.nim", NIM_STDLIB, [], "abc 42 @[1, 2, 3]\n"),
        ("crystal", "main.cr", CRYSTAL_STDLIB, [], '{"a":1}\n1267650600228229401496703205376\n- 42\n'),
        ("objective-c", "main.m", OBJC_FOUNDATION, [], "abc 42\n"),
        ("nasm", "main.asm", NASM_MAIN_LIBC, [], "abc 42\n"),
        ("gas", "main.s", GAS_INTEL, [], "abc 42\n"),
    ],
    ids=[
        "cobol-fixed",
        "fortran-fixed-form",
        "pascal-units",
        "ada-any-unit",
        "nim-stdlib",
        "crystal-stdlib",
        "objc-foundation",
        "nasm-main-libc",
        "gas-intel",
    ],
)
def test_native_language_feature(
    engine: Engine, language: str, file_name: str, source: str, options: list[str], expected: str
) -> None:
    spec = JobSpec.model_validate({"language": language, "files": [{"name": file_name, "content": source}],
                                   "compile_options": options})  # fmt: skip
    result = engine.run(spec)
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == expected


@pytest.mark.parametrize("options", [[], ["-f", "elf32"]])
def test_nasm_32bit_syscalls_are_killed(run_job: Any, options: list[str]) -> None:
    # Assembled as x86-64 the program runs but its int 0x80 is the i386 ABI: seccomp's bad-arch action kills it
    # (SIGSYS) before it prints. An elf32 object does not link into our x86-64 program at all.
    result = run_job("nasm", NASM_32BIT, compile_options=options)
    if options:
        assert result.verdict == "compilation_error", result
    else:
        assert result.verdict == "runtime_error", result
        assert result.tests[0].run.stdout == ""
