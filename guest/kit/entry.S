/*
 * Swiftlet kit entry: PVH note, 32-bit -> 64-bit long mode, trap stubs and the
 * handful of instructions Swift cannot express (port I/O, MSRs, HLT).
 * Everything else lives in Swift.
 *
 * Memory: the first 4 GiB are identity-mapped (virtual == physical), so
 * device DMA addresses are plain pointer values: 2 MiB pages, except 4 KiB
 * pages for the first 2 MiB, where page 0 (null, once kit_main has read the
 * boot information) and the guard page under the stack are unmapped. The
 * top GiB (MMIO: virtio-mmio, IOAPIC, LAPIC) is mapped uncached.
 *
 * KIT_NO_SSE (set by build.sh --no-sse): the guest never touches x87/SSE
 * state, so the trap path skips FXSAVE/FXRSTOR and the entry skips FNINIT.
 */
#define KIT_STACK_SIZE      65536
#define KIT_IRQ_STACK_SIZE  32768
#define KIT_VECTORS         48          /* 0-31 exceptions, 32-47 kit IRQs */

        .section .note.Xen, "a", @note
        .p2align 2
        .long 4                         /* name size ("Xen\0") */
        .long 4                         /* descriptor size */
        .long 18                        /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .p2align 2
        .long kit_start32

/* ---------------------------------------------------------------- 32-bit */
        .section .text.entry, "ax"
        .code32
        .globl kit_start32
kit_start32:
        cli
        rdtsc                           /* time zero for Clock and READY */
        mov %eax, %ebp
        mov %edx, %esi

        /* zero .bss (page tables, stacks, Swift globals) */
        cld
        mov $__bss_start, %edi
        mov $__bss_end, %ecx
        sub %edi, %ecx
        shr $2, %ecx                    /* .bss is 16-byte aligned and sized */
        xor %eax, %eax
        rep stosl

        mov %ebp, kit_boot_tsc
        mov %esi, kit_boot_tsc + 4
        mov %ebx, kit_start_info        /* hvm_start_info physical address */

        /* PML4[0] -> PDPT; PDPT[0..3] -> PD0..PD3; 2048 x 2 MiB pages */
        mov $kit_pdpt, %eax
        or $0x3, %eax
        mov %eax, kit_pml4
        mov $kit_pd, %eax
        or $0x3, %eax
        mov $kit_pdpt, %edi
        mov $4, %ecx
1:      mov %eax, (%edi)
        add $4096, %eax
        add $8, %edi
        loop 1b
        /* The first 2 MiB use 4 KiB pages so that page 0 (null pointers) and
           the guard page under the stack (overflow) can be left unmapped.
           Page 0 stays mapped until kit_main has read the boot information:
           under -M pc the PVH option ROM puts the memory map (and may put the
           command line) there; kit_main then calls kit_unmap_page_zero. */
        mov $kit_pt, %edi
        xor %ecx, %ecx
8:      mov %ecx, %eax
        shl $12, %eax
        or $0x3, %eax
        mov %eax, (%edi, %ecx, 8)
        inc %ecx
        cmp $512, %ecx
        jb 8b
        mov $kit_stack_guard, %eax
        shr $12, %eax
        movl $0, (%edi, %eax, 8)
        mov $kit_pd, %edi
        mov $1, %ecx
        mov $kit_pt, %eax
        or $0x3, %eax
        mov %eax, (%edi)
2:      mov %ecx, %eax
        shl $21, %eax
        or $0x83, %eax                  /* present, writable, 2 MiB */
        cmp $1536, %ecx
        jb 3f
        or $0x18, %eax                  /* >= 3 GiB: MMIO, cache disabled */
3:      mov %eax, (%edi, %ecx, 8)
        inc %ecx
        cmp $2048, %ecx
        jb 2b

        mov $kit_pml4, %eax
        mov %eax, %cr3
        mov %cr4, %eax
        or $0x620, %eax                 /* PAE | OSFXSR | OSXMMEXCPT */
        mov %eax, %cr4
        mov $0xC0000080, %ecx           /* EFER.LME */
        rdmsr
        or $0x100, %eax
        wrmsr
        mov %cr0, %eax
        and $~0x4, %eax                 /* EM off */
        or $0x80000023, %eax            /* PG | NE | MP | PE */
        mov %eax, %cr0
        lgdt kit_gdt_pointer
        ljmp $0x08, $kit_start64

/* ---------------------------------------------------------------- 64-bit */
        .code64
kit_start64:
        mov $0x10, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov %eax, %fs
        mov %eax, %gs
        lea kit_stack_top(%rip), %rsp
        xor %ebp, %ebp

        /* TSS: IST1 is the stack every trap runs on, so an interrupt never
           writes into the red zone of the code it interrupts. */
        lea kit_irq_stack_top(%rip), %rax
        mov %rax, kit_tss + 36(%rip)
        movw $104, kit_tss + 4 + 100(%rip)   /* I/O map base beyond limit */
        lea kit_tss(%rip), %rax
        lea kit_gdt_tss(%rip), %rdi
        movw $103, (%rdi)
        mov %ax, 2(%rdi)
        shr $16, %rax
        mov %al, 4(%rdi)
        movb $0x89, 5(%rdi)             /* present, available 64-bit TSS */
        mov %ah, 7(%rdi)
        shr $16, %rax
        mov %eax, 8(%rdi)
        mov $0x18, %eax
        ltr %ax

        /* IDT: interrupt gates for vectors 0..KIT_VECTORS-1, all on IST1 */
        lea kit_idt(%rip), %rdi
        lea kit_isr_table(%rip), %rsi
        mov $KIT_VECTORS, %ecx
4:      mov (%rsi), %rax
        mov %ax, (%rdi)
        movw $0x08, 2(%rdi)
        movb $1, 4(%rdi)
        movb $0x8E, 5(%rdi)
        shr $16, %rax
        mov %ax, 6(%rdi)
        shr $16, %rax
        mov %eax, 8(%rdi)
        add $16, %rdi
        add $8, %rsi
        loop 4b
        lidt kit_idt_pointer(%rip)

#ifndef KIT_NO_SSE
        fninit
#endif
        mov kit_start_info(%rip), %edi
        mov kit_boot_tsc(%rip), %rsi
        call kit_main                   /* kit set-up (Kit.swift) */
        xor %edi, %edi
        xor %esi, %esi
        call main                       /* the app's @main */
        call kit_app_returned
        jmp kit_halt_forever

/* ------------------------------------------------------------ trap stubs */
.macro TRAP_NOERR n
kit_isr_\n:
        pushq $0
        pushq $\n
        jmp kit_trap_common
.endm
.macro TRAP_ERR n
kit_isr_\n:
        pushq $\n
        jmp kit_trap_common
.endm

        TRAP_NOERR 0
        TRAP_NOERR 1
        TRAP_NOERR 2
        TRAP_NOERR 3
        TRAP_NOERR 4
        TRAP_NOERR 5
        TRAP_NOERR 6
        TRAP_NOERR 7
        TRAP_ERR   8
        TRAP_NOERR 9
        TRAP_ERR   10
        TRAP_ERR   11
        TRAP_ERR   12
        TRAP_ERR   13
        TRAP_ERR   14
        TRAP_NOERR 15
        TRAP_NOERR 16
        TRAP_ERR   17
        TRAP_NOERR 18
        TRAP_NOERR 19
        TRAP_NOERR 20
        TRAP_ERR   21
        TRAP_NOERR 22
        TRAP_NOERR 23
        TRAP_NOERR 24
        TRAP_NOERR 25
        TRAP_NOERR 26
        TRAP_NOERR 27
        TRAP_NOERR 28
        TRAP_ERR   29
        TRAP_ERR   30
        TRAP_NOERR 31
        TRAP_NOERR 32
        TRAP_NOERR 33
        TRAP_NOERR 34
        TRAP_NOERR 35
        TRAP_NOERR 36
        TRAP_NOERR 37
        TRAP_NOERR 38
        TRAP_NOERR 39
        TRAP_NOERR 40
        TRAP_NOERR 41
        TRAP_NOERR 42
        TRAP_NOERR 43
        TRAP_NOERR 44
        TRAP_NOERR 45
        TRAP_NOERR 46
        TRAP_NOERR 47

/*
 * Frame handed to kit_trap (see TrapFrame in Interrupts.swift):
 * rax rbx rcx rdx rsi rdi rbp r8..r15, vector, error, rip, cs, rflags, rsp, ss
 */
kit_trap_common:
        push %r15
        push %r14
        push %r13
        push %r12
        push %r11
        push %r10
        push %r9
        push %r8
        push %rbp
        push %rdi
        push %rsi
        push %rdx
        push %rcx
        push %rbx
        push %rax
        cmpq $32, 120(%rsp)
        jb 5f
        incl kit_irq_counter(%rip)      /* lets Kit.run see "an IRQ came" */
5:      mov %rsp, %rdi
        mov %rsp, %rbx
#ifndef KIT_NO_SSE
        sub $512, %rsp
        fxsave (%rsp)
#endif
        cld
        call kit_trap
#ifndef KIT_NO_SSE
        fxrstor (%rsp)
#endif
        mov %rbx, %rsp
        pop %rax
        pop %rbx
        pop %rcx
        pop %rdx
        pop %rsi
        pop %rdi
        pop %rbp
        pop %r8
        pop %r9
        pop %r10
        pop %r11
        pop %r12
        pop %r13
        pop %r14
        pop %r15
        add $16, %rsp
        iretq

/* -------------------------------------------- helpers called from Swift */
        .globl kit_outb, kit_inb, kit_rdtsc, kit_rdmsr
        .globl kit_wrmsr, kit_read_cr2, kit_irq_count
        .globl kit_wait_for_interrupt, kit_interrupts_disable
        .globl kit_interrupts_restore, kit_interrupts_enable
        .globl kit_halt_forever, kit_kernel_end, kit_stack_bottom, free
        .globl kit_unmap_page_zero
kit_outb:                               /* (port, value) */
        mov %edi, %edx
        mov %esi, %eax
        out %al, %dx
        ret
kit_inb:                                /* (port) -> UInt8 */
        mov %edi, %edx
        xor %eax, %eax
        in %dx, %al
        ret
kit_rdtsc:
        rdtsc
        shl $32, %rdx
        or %rdx, %rax
        ret
kit_rdmsr:                              /* (msr) -> UInt64 */
        mov %edi, %ecx
        rdmsr
        shl $32, %rdx
        or %rdx, %rax
        ret
kit_wrmsr:                              /* (msr, value) */
        mov %edi, %ecx
        mov %esi, %eax
        mov %rsi, %rdx
        shr $32, %rdx
        wrmsr
        ret
kit_read_cr2:
        mov %cr2, %rax
        ret
kit_kernel_end:
        lea _end(%rip), %rax
        ret
kit_stack_bottom:
        lea kit_stack(%rip), %rax
        ret
kit_irq_count:
        mov kit_irq_counter(%rip), %eax
        ret
kit_unmap_page_zero:                    /* null pointers fault from now on */
        movq $0, kit_pt(%rip)
        xor %eax, %eax
        invlpg (%rax)
        ret
/* Sleep until the next interrupt unless one arrived after `seen` was read.
   "sti; hlt" is atomic: an IRQ pending at the sti still wakes the hlt. */
kit_wait_for_interrupt:                 /* (seen: UInt32) */
        cli
        cmp kit_irq_counter(%rip), %edi
        jne 6f
        sti
        hlt
        ret
6:      sti
        ret
kit_interrupts_disable:                 /* () -> previous RFLAGS */
        pushfq
        pop %rax
        cli
        ret
kit_interrupts_restore:                 /* (rflags) */
        test $0x200, %edi
        jz 7f
        sti
7:      ret
kit_interrupts_enable:
        sti
        ret
free:                                   /* Swift reserves the name "free" */
        jmp kit_free
kit_halt_forever:
        cli
        hlt
        jmp kit_halt_forever

/* ------------------------------------------------------------------ data */
        .section .rodata.entry, "a"
        .p2align 3
kit_isr_table:
        .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23
        .quad kit_isr_\n
        .endr
        .irp n, 24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
        .quad kit_isr_\n
        .endr

        .section .data.entry, "aw"
        .p2align 3
kit_gdt:
        .quad 0
        .quad 0x00AF9A000000FFFF        /* 0x08: 64-bit code */
        .quad 0x00CF92000000FFFF        /* 0x10: data */
kit_gdt_tss:
        .quad 0, 0                      /* 0x18: TSS, filled at boot */
kit_gdt_end:
        .p2align 2
        .word 0
kit_gdt_pointer:
        .word kit_gdt_end - kit_gdt - 1
        .quad kit_gdt
        .p2align 2
        .word 0
kit_idt_pointer:
        .word 256 * 16 - 1
        .quad kit_idt

        .section .bss.entry, "aw", @nobits
        .p2align 12
kit_pml4:       .skip 4096
kit_pdpt:       .skip 4096
kit_pd:         .skip 4 * 4096
kit_pt:         .skip 4096
kit_idt:        .skip 256 * 16
kit_tss:        .skip 104
        .p2align 3
kit_boot_tsc:   .skip 8
kit_start_info: .skip 8
kit_irq_counter: .skip 4

        .section .stack, "aw", @nobits
        .p2align 12
        .globl kit_stack_guard
kit_stack_guard: .skip 4096             /* unmapped: overflow faults */
kit_stack:      .skip KIT_STACK_SIZE
kit_stack_top:
kit_irq_stack:  .skip KIT_IRQ_STACK_SIZE
kit_irq_stack_top:
