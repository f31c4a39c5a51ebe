/* QEMU test harness (not part of the portable model): reads int8 images from input.bin over Arm semihosting,
 * runs tf_model_run on each, writes each output and the instructions it took to output.bin, then the stack
 * high-water mark of tf_model_run to stats.bin.
 *
 * Instructions: qemu runs with -icount shift=0, so virtual time advances 1 ns per instruction; the CMSDK APB timer
 * of the MPS2 boards counts the 25 MHz system clock, i.e. one tick per 40 instructions. Stack: the free stack
 * below the current stack pointer is painted before the first inference and scanned after the last. */
#include <stdint.h>
#include <string.h>

#include "model.h"

#define SYS_OPEN 0x01
#define SYS_CLOSE 0x02
#define SYS_WRITE 0x05
#define SYS_READ 0x06
#define SYS_EXIT 0x18
#define TIMER0 ((volatile uint32_t *)0x40000000u) /* CMSDK APB timer 0: CTRL, VALUE, RELOAD */
#define NS_PER_TICK 40u
#define PAINT 0xA5A5A5A5u

static int32_t semihost(int32_t op, void *arg) {
    register int32_t r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static int32_t sh_open(const char *name, int32_t mode) {
    uint32_t a[3] = {(uint32_t)name, (uint32_t)mode, (uint32_t)strlen(name)};
    return semihost(SYS_OPEN, a);
}
static int32_t sh_read(int32_t fd, void *buf, uint32_t n) {
    uint32_t a[3] = {(uint32_t)fd, (uint32_t)buf, n};
    return semihost(SYS_READ, a); /* bytes NOT read */
}
static void sh_write(int32_t fd, const void *buf, uint32_t n) {
    uint32_t a[3] = {(uint32_t)fd, (uint32_t)buf, n};
    semihost(SYS_WRITE, a);
}
static void sh_close(int32_t fd) {
    uint32_t a[1] = {(uint32_t)fd};
    semihost(SYS_CLOSE, a);
}
void sh_exit(int32_t code) {
    /* AArch32 SYS_EXIT takes the reason in r1: ApplicationExit (qemu exits 0) or RunTimeError (qemu exits 1) */
    semihost(SYS_EXIT, (void *)(code == 0 ? 0x20026u : 0x20023u));
    for (;;) {
    }
}

void Fault_Handler(void) { sh_exit(3); } /* overrides the start-up file's weak handler: a fault ends qemu */

static int8_t in_buf[TF_INPUT_BYTES] __attribute__((aligned(4)));
static int8_t out_buf[TF_OUTPUT_BYTES] __attribute__((aligned(4)));
extern uint32_t _stack_limit; /* lowest address of the stack region (linker script) */

int main(void) {
    int32_t fin = sh_open("input.bin", 1);   /* "rb" */
    int32_t fout = sh_open("output.bin", 5); /* "wb" */
    if (fin < 0 || fout < 0) sh_exit(2);
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *p = &_stack_limit; (uint32_t)p < sp - 64u; p++) *p = PAINT;
    TIMER0[0] = 0;
    TIMER0[2] = 0xFFFFFFFFu;
    TIMER0[1] = 0xFFFFFFFFu;
    TIMER0[0] = 1;
    uint32_t images = 0;
    while (sh_read(fin, in_buf, TF_INPUT_BYTES) == 0) {
        uint32_t t0 = TIMER0[1];
        tf_model_run(in_buf, out_buf);
        uint32_t t1 = TIMER0[1];
        uint32_t insns = (t0 - t1) * NS_PER_TICK;
        sh_write(fout, out_buf, TF_OUTPUT_BYTES);
        sh_write(fout, &insns, 4);
        images++;
    }
    uint32_t *p = &_stack_limit;
    while ((uint32_t)p < sp && *p == PAINT) p++;
    uint32_t stats[2] = {images, sp - (uint32_t)p}; /* bytes below main's frame that tf_model_run touched */
    int32_t fst = sh_open("stats.bin", 5);
    sh_write(fst, stats, sizeof stats);
    sh_close(fst);
    sh_close(fin);
    sh_close(fout);
    sh_exit(0);
    return 0;
}
